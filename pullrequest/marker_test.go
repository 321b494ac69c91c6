package pullrequest

import (
	"strings"
	"testing"
)

func TestParseMarker(t *testing.T) {
	tests := []struct {
		body string
		pr   int
		ok   bool
	}{
		{Marker(12) + "\nbody", 12, true},
		{Marker(12) + "\r\nbody", 12, true},
		{"  " + Marker(7), 7, true},
		{"text\n" + Marker(12), 0, false}, // not the first line
		{"<!-- merlin pr=012 -->", 0, false},
		{"<!-- merlin pr=0 -->", 0, false},
		{"<!-- merlin pr=-1 -->", 0, false},
		{"<!-- merlin pr=1x -->", 0, false},
		{"<!-- merlin pr=99999999999 -->", 0, false},
		{"<!-- merlin reply pr=3 -->", 0, false},
		{"<!-- MERLIN pr=3 -->", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		pr, ok := ParseMarker(tt.body)
		if pr != tt.pr || ok != tt.ok {
			t.Errorf("ParseMarker(%q) = %d, %v; want %d, %v", tt.body, pr, ok, tt.pr, tt.ok)
		}
	}
}

func TestFindSticky(t *testing.T) {
	bodies := []string{"hello", replyMarker(4) + "\n@x: done", Marker(3) + "\nother pr", Marker(4) + "\nours", Marker(4) + "\na later copy"}
	if i := FindSticky(4, bodies); i != 3 {
		t.Errorf("FindSticky = %d, want 3 (the oldest)", i)
	}
	if i := FindSticky(5, bodies); i != -1 {
		t.Errorf("FindSticky of a pr without comment = %d", i)
	}
}

func TestTextEscapes(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a|b", `a\|b`},
		{"<script>", "&lt;script&gt;"},
		{"x -->", "x --&gt;"},
		{"`code`", "&#96;code&#96;"},
		{"line\nbreak", "line break"},
		{"@team", "&#64;team"},
		{"**bold** [link](x)", `\*\*bold\*\* \[link\](x)`},
		{`back\slash`, `back\\slash`},
	}
	for _, tt := range tests {
		if got := Text(tt.in, 0); got != tt.want {
			t.Errorf("Text(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := Text(strings.Repeat("é", 10), 4); got != "ééé…" {
		t.Errorf("rune-safe cut = %q", got)
	}
}

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"/merlin promote iris", "/MERLIN", "/merlin \x00", "/merlin promote a b c\nx", "\xff/merlin"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		c, ok := ParseCommand(body)
		if !ok {
			return
		}
		if c.Verb == "" {
			t.Fatalf("a command without a verb: %+v", c)
		}
		// What Merlin says back about a command never carries a marker
		// nor a line break, whatever the command was.
		line := c.Line()
		if strings.Contains(line, "\n") || strings.Contains(line, "<!--") || strings.Contains(line, "`") {
			t.Fatalf("Line() = %q", line)
		}
		if _, ok := Triage(CommentEvent{Action: "created", Body: Refusal(1, "x", c, "no"), OnPR: true}); ok {
			t.Fatal("Merlin's refusal is itself a command")
		}
	})
}

func FuzzMarker(f *testing.F) {
	f.Add(1, "iris", "models/iris/merlin.yaml:1:2: bad")
	f.Add(99999, "<!-- merlin pr=1 -->", "-->`|")
	f.Fuzz(func(t *testing.T, pr int, name, errText string) {
		if pr <= 0 {
			pr = -pr + 1
		}
		if pr <= 0 {
			return
		}
		ParseMarker(name) // must not panic on anything
		r := previewing(pr)
		r.Status.Name, r.Error = name, errText
		body := Render(Comment{PR: PR{Number: pr, HeadSHA: name}, Models: []Report{r}}, 0)
		got, ok := ParseMarker(body)
		if !ok || got != pr {
			t.Fatalf("ParseMarker(Render(pr=%d)) = %d, %v", pr, got, ok)
		}
		if strings.Count(body, "<!--") != 1 {
			t.Fatalf("user text opened an HTML comment:\n%s", body)
		}
	})
}
