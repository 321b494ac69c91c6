package pullrequest

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		body string
		want Command
		ok   bool
	}{
		{"/merlin help", Command{Verb: Help}, true},
		{"/merlin", Command{Verb: Help}, true},
		{"  /MERLIN   Promote   iris-sklearn  \r\nbecause it looks good", Command{Verb: Promote, Model: "iris-sklearn"}, true},
		{"/merlin promote", Command{Verb: Promote}, true},
		{"/merlin rollback iris", Command{Verb: Rollback, Model: "iris"}, true},
		{"/merlin pause iris", Command{Verb: Pause, Model: "iris"}, true},
		{"/Merlin RESUME iris", Command{Verb: Resume, Model: "iris"}, true},
		{"/merlin status", Command{Verb: Status}, true},
		{"/merlin preview", Command{Verb: Preview}, true},
		{"/merlin preview please", Command{Verb: Preview, Extra: []string{"please"}}, true},
		{"/merlin promote a b", Command{Verb: Promote, Model: "a", Extra: []string{"b"}}, true},
		{"/merlin deploy iris", Command{Verb: Help, Unknown: "deploy"}, true},
		{"/merlin\tstatus", Command{Verb: Status}, true},
		{"/merlinstatus", Command{}, false},
		{"please /merlin promote", Command{}, false},
		{"LGTM\n/merlin promote", Command{}, false}, // only the first line counts
		{"", Command{}, false},
		{"> /merlin promote", Command{}, false}, // a quote is not a command
	}
	for _, tt := range tests {
		got, ok := ParseCommand(tt.body)
		if ok != tt.ok || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseCommand(%q) = %+v, %v; want %+v, %v", tt.body, got, ok, tt.want, tt.ok)
		}
	}
}

func TestTriage(t *testing.T) {
	cmd := "/merlin promote iris"
	tests := []struct {
		name string
		e    CommentEvent
		ok   bool
	}{
		{"created by a user on a pr", CommentEvent{Action: "created", Body: cmd, Login: "octocat", SenderType: "User", OnPR: true}, true},
		{"edited", CommentEvent{Action: "edited", Body: cmd, Login: "octocat", SenderType: "User", OnPR: true}, false},
		{"deleted", CommentEvent{Action: "deleted", Body: cmd, Login: "octocat", SenderType: "User", OnPR: true}, false},
		{"a bot", CommentEvent{Action: "created", Body: cmd, Login: "renovate", SenderType: "Bot", OnPR: true}, false},
		{"an app login", CommentEvent{Action: "created", Body: cmd, Login: "merlin[bot]", SenderType: "User", OnPR: true}, false},
		{"on an issue", CommentEvent{Action: "created", Body: cmd, Login: "octocat", SenderType: "User"}, false},
		{"carries the sticky marker", CommentEvent{Action: "created", Body: cmd + "\n" + Marker(3), Login: "octocat", SenderType: "User", OnPR: true}, false},
		{"carries a reply marker", CommentEvent{Action: "created", Body: cmd + "\n" + replyMarker(3), Login: "octocat", SenderType: "User", OnPR: true}, false},
		{"quotes merlin", CommentEvent{Action: "created", Body: cmd + "\n> " + replyMarker(3), Login: "octocat", SenderType: "User", OnPR: true}, false},
		{"not a command", CommentEvent{Action: "created", Body: "nice", Login: "octocat", SenderType: "User", OnPR: true}, false},
	}
	for _, tt := range tests {
		if _, ok := Triage(tt.e); ok != tt.ok {
			t.Errorf("%s: Triage ok = %v, want %v", tt.name, ok, tt.ok)
		}
	}
}

func TestTargets(t *testing.T) {
	two := []string{"iris-sklearn", "iris-xgboost"}
	tests := []struct {
		name    string
		c       Command
		names   []string
		want    []string
		refusal string // a fragment of the refusal; "" for none
	}{
		{"one model, none named", Command{Verb: Promote}, []string{"iris"}, []string{"iris"}, ""},
		{"named", Command{Verb: Pause, Model: "iris-xgboost"}, two, []string{"iris-xgboost"}, ""},
		{"named in another case", Command{Verb: Resume, Model: "IRIS-XGBOOST"}, two, []string{"iris-xgboost"}, ""},
		{"several, none named", Command{Verb: Rollback}, two, nil, "It changes: iris-sklearn, iris-xgboost."},
		{"unknown name", Command{Verb: Promote, Model: "resnet"}, two, nil, "no model named resnet. It changes: iris-sklearn, iris-xgboost."},
		{"hostile name is escaped", Command{Verb: Promote, Model: "<img|x>"}, two, nil, "no model named &lt;img\\|x&gt;."},
		{"two names", Command{Verb: Promote, Model: "a", Extra: []string{"b"}}, two, nil, "takes one model"},
		{"no models", Command{Verb: Promote}, nil, nil, "changes no model"},
		{"preview takes all", Command{Verb: Preview}, two, two, ""},
		{"preview of nothing", Command{Verb: Preview}, nil, nil, "nothing to preview"},
		{"status needs none", Command{Verb: Status}, two, nil, ""},
	}
	for _, tt := range tests {
		got, refusal := Targets(tt.c, tt.names)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: models = %q, want %q", tt.name, got, tt.want)
		}
		if tt.refusal == "" && refusal != "" || !strings.Contains(refusal, tt.refusal) {
			t.Errorf("%s: refusal = %q, want one containing %q", tt.name, refusal, tt.refusal)
		}
	}
}

func TestReplies(t *testing.T) {
	c := Command{Verb: Promote, Model: "iris`x"}
	tests := []struct {
		name, body string
		want       []string
	}{
		{"outcome", Reply(9, "octocat", c, []Outcome{{Model: "iris", Message: "promoted iris-1234abcd"}}), []string{"@octocat", "/merlin promote iris&#96;x", "- iris: promoted iris-1234abcd"}},
		{"refusal", Refusal(9, "octocat", c, "CODEOWNERS says no."), []string{"@octocat", "was not run: CODEOWNERS says no."}},
		{"unknown", HelpReply(9, "octocat", Command{Verb: Help, Unknown: "deploy"}), []string{"@octocat", "/merlin deploy is not a Merlin command", "/merlin rollback [model]"}},
	}
	for _, tt := range tests {
		for _, w := range tt.want {
			if !strings.Contains(tt.body, w) {
				t.Errorf("%s: %q lacks %q", tt.name, tt.body, w)
			}
		}
		if !IsMerlins(tt.body) {
			t.Errorf("%s: reply carries no marker, Merlin could execute it: %q", tt.name, tt.body)
		}
		if _, ok := ParseMarker(tt.body); ok {
			t.Errorf("%s: a reply would be taken for the sticky comment", tt.name)
		}
	}
}

func TestApprovePinsHead(t *testing.T) {
	p := Approve(PR{Number: 1, HeadSHA: "aaa", Fork: true})
	if p.ForkWaiting() {
		t.Fatal("approved head still waits")
	}
	p.HeadSHA = "bbb" // a later push
	if !p.ForkWaiting() {
		t.Fatal("a push after the approval runs without a new one")
	}
}
