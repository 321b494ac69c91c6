package pullrequest

import (
	"fmt"
	"path"
	"strings"
)

// Codeowners is a parsed CODEOWNERS file, with GitHub's rules: each line
// is a gitignore-style pattern followed by owners; the last line that
// matches a path decides its owners (a line without owners leaves the
// path unowned); `#` starts a comment at the start of a line or after a
// space, `\#` is a literal `#`; paths are case-sensitive. GitHub does not
// support `!` negation nor `[ ]` ranges: such lines are reported in Errors
// and skipped, as GitHub skips them.
type Codeowners struct {
	Rules  []Rule
	Errors []string // "line N: problem"
}

// Rule is one line of a CODEOWNERS file.
type Rule struct {
	Line    int
	Pattern string
	Owners  []Owner
	toks    []token
}

// Owner is `@user`, `@org/team` or an email address.
type Owner struct {
	Login      string // user (without @)
	Org, Team  string // team
	Email      string
	OrigString string
}

func (o Owner) String() string { return o.OrigString }

// token is one segment of a compiled pattern.
type token struct {
	glob string
	kind tokenKind
}

type tokenKind int

const (
	segment  tokenKind = iota // one path segment matching glob
	anyZero                   // ** : zero or more segments
	anyOne                    // a trailing / or /** : one or more segments
	anyChild                  // the implicit "and everything below" of a pattern's last segment
)

// ParseCodeowners parses a CODEOWNERS file.
func ParseCodeowners(data string) *Codeowners {
	co := &Codeowners{}
	n := 0
	for line := range strings.Lines(data) {
		n++
		fields := splitLine(strings.TrimRight(line, "\r\n"))
		if len(fields) == 0 {
			continue
		}
		r := Rule{Line: n, Pattern: fields[0]}
		toks, err := compilePattern(fields[0])
		if err != nil {
			co.Errors = append(co.Errors, fmt.Sprintf("line %d: %v", n, err))
			continue
		}
		r.toks = toks
		for _, f := range fields[1:] {
			o, ok := parseOwner(f)
			if !ok {
				co.Errors = append(co.Errors, fmt.Sprintf("line %d: invalid owner %q", n, f))
				continue
			}
			r.Owners = append(r.Owners, o)
		}
		co.Rules = append(co.Rules, r)
	}
	return co
}

// splitLine splits a line into whitespace-separated fields, dropping the
// comment: an unescaped # at the start of a field. `\#` and `\ ` keep
// their escape (the pattern compiler reads it).
func splitLine(line string) []string {
	var fields []string
	var cur strings.Builder
	flush := func() {
		if cur.Len() > 0 {
			fields = append(fields, cur.String())
			cur.Reset()
		}
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\\' && i+1 < len(line):
			cur.WriteByte(c)
			cur.WriteByte(line[i+1])
			i++
		case c == ' ' || c == '\t':
			flush()
		case c == '#' && cur.Len() == 0:
			return fields
		default:
			cur.WriteByte(c)
		}
	}
	flush()
	return fields
}

func parseOwner(f string) (Owner, bool) {
	if login, ok := strings.CutPrefix(f, "@"); ok {
		org, team, isTeam := strings.Cut(login, "/")
		switch {
		case isTeam && validName(org) && validName(team):
			return Owner{Org: org, Team: team, OrigString: f}, true
		case !isTeam && validName(login):
			return Owner{Login: login, OrigString: f}, true
		}
		return Owner{}, false
	}
	if local, domain, ok := strings.Cut(f, "@"); ok && local != "" && strings.Contains(domain, ".") && !strings.ContainsAny(domain, "@/") {
		return Owner{Email: f, OrigString: f}, true
	}
	return Owner{}, false
}

func validName(s string) bool {
	return s != "" && strings.Trim(strings.ToLower(s), "abcdefghijklmnopqrstuvwxyz0123456789-_.") == ""
}

// compilePattern turns a pattern into tokens. Like GitHub (and unlike
// gitignore for `docs/*`), a pattern owns what it matches and everything
// below it, except that a last segment of a bare `*` owns only the files
// directly inside.
func compilePattern(p string) ([]token, error) {
	if err := unsupported(p); err != nil {
		return nil, err
	}
	anchored := strings.HasPrefix(p, "/")
	p = strings.TrimPrefix(p, "/")
	dirOnly := strings.HasSuffix(p, "/")
	p = strings.TrimSuffix(p, "/")
	segs := strings.Split(p, "/")
	// A pattern without a slash but at its end matches at any depth;
	// one with a slash elsewhere is relative to the root (gitignore).
	if !anchored && len(segs) == 1 && segs[0] != "**" {
		segs = append([]string{"**"}, segs...)
	}
	var toks []token
	for i, s := range segs {
		last := i == len(segs)-1
		switch {
		case s == "":
			return nil, fmt.Errorf("pattern %q: empty path segment", p)
		case s == "**" && i == 0 && last:
			return []token{{kind: anyOne}}, nil
		case s == "**" && last:
			toks = append(toks, token{kind: anyOne})
		case s == "**":
			if len(toks) == 0 || toks[len(toks)-1].kind != anyZero {
				toks = append(toks, token{kind: anyZero})
			}
		case strings.Contains(s, "**"):
			return nil, fmt.Errorf("pattern %q: ** must be a whole path segment", p)
		default:
			toks = append(toks, token{glob: s, kind: segment})
		}
	}
	lastSeg := segs[len(segs)-1]
	switch {
	case lastSeg == "**":
	case dirOnly:
		toks = append(toks, token{kind: anyOne})
	case lastSeg != "*":
		toks = append(toks, token{kind: anyChild})
	}
	return toks, nil
}

// unsupported rejects the syntax GitHub's CODEOWNERS does not take.
func unsupported(p string) error {
	switch {
	case strings.HasPrefix(p, "!"):
		return fmt.Errorf("pattern %q: negation (!) is not supported by CODEOWNERS", p)
	case strings.ContainsAny(p, "[]"):
		return fmt.Errorf("pattern %q: character ranges ([ ]) are not supported by CODEOWNERS", p)
	case strings.Contains(p, "***"):
		return fmt.Errorf("pattern %q: three consecutive asterisks", p)
	case p == "/":
		return fmt.Errorf("pattern %q matches nothing", p)
	}
	return nil
}

// dirMarker stands for "any file directly in a directory": only tokens
// that match any name (**, a bare *, a trailing /) consume it, so a
// directory is covered by a rule only when the rule owns every file in it.
const dirMarker = "\x00"

// match reports whether toks match the path segments. It fills a table
// of which token suffixes match which segment suffixes, so a pattern with
// many ** runs in O(tokens × segments²), never by exponential backtracking.
func match(toks []token, segs []string) bool {
	// ok[i][j]: toks[i:] matches segs[j:].
	ok := make([][]bool, len(toks)+1)
	for i := range ok {
		ok[i] = make([]bool, len(segs)+1)
	}
	ok[len(toks)][len(segs)] = true
	for i := len(toks) - 1; i >= 0; i-- {
		t := toks[i]
		for j := len(segs); j >= 0; j-- {
			switch t.kind {
			case anyZero, anyChild, anyOne:
				from := j
				if t.kind == anyOne {
					from = j + 1
				}
				for k := from; k <= len(segs) && !ok[i][j]; k++ {
					ok[i][j] = ok[i+1][k]
				}
			default:
				ok[i][j] = j < len(segs) && ok[i+1][j+1] && globMatch(t.glob, segs[j])
			}
		}
	}
	return ok[0][0]
}

// globMatch matches one segment; only a bare * matches any name a file
// can have (dirMarker).
func globMatch(glob, seg string) bool {
	if seg == dirMarker {
		return glob == "*"
	}
	m, err := path.Match(glob, seg)
	return err == nil && m
}

// Owners returns the owners of file name (slash-separated, relative to
// the repository root) and the rule that decided them; ok is false when
// no rule matches.
func (c *Codeowners) Owners(name string) (owners []Owner, rule Rule, ok bool) {
	return c.lookup(splitPath(name))
}

// DirOwners returns the owners of directory dir (slash-separated; "" or
// "." is the root): those of the last rule that owns every file directly
// in it, whatever its name. `docs/*` covers docs but not docs/api; `*.py`
// covers no directory (unless its name ends in .py).
func (c *Codeowners) DirOwners(dir string) (owners []Owner, rule Rule, ok bool) {
	return c.lookup(append(splitPath(dir), dirMarker))
}

func (c *Codeowners) lookup(segs []string) ([]Owner, Rule, bool) {
	if c == nil {
		return nil, Rule{}, false
	}
	for i := len(c.Rules) - 1; i >= 0; i-- {
		if match(c.Rules[i].toks, segs) {
			return c.Rules[i].Owners, c.Rules[i], true
		}
	}
	return nil, Rule{}, false
}

func splitPath(name string) []string {
	name = strings.Trim(path.Clean("/"+name), "/")
	if name == "" {
		return nil
	}
	return strings.Split(name, "/")
}
