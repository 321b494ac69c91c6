package pullrequest

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// githubExample is the example CODEOWNERS file of GitHub's documentation
// ("About code owners"), with its comments shortened.
const githubExample = `# This is a comment.
# Each line is a file pattern followed by one or more owners.

# These owners will be the default owners for everything in the repo.
*       @global-owner1 @global-owner2

# Order is important; the last matching pattern takes the most precedence.
*.js    @js-owner #This is an inline comment.

# You can also use email addresses if you prefer.
*.go docs@example.com

# Teams can be specified as code owners as well.
*.txt @octo-org/octocats

# @doctocat owns any files in the build/logs directory at the root of the
# repository and any of its subdirectories.
/build/logs/ @doctocat

# The docs/* pattern will match files like docs/getting-started.md but not
# further nested files like docs/build-app/troubleshooting.md.
docs/*  docs@example.com

# @octocat owns any file in an apps directory anywhere in your repository.
apps/ @octocat

# @doctocat owns any file in the /docs directory in the root of your
# repository and any of its subdirectories.
/docs/ @doctocat

# Any change inside the /scripts directory will require approval from
# @doctocat or @octocat.
/scripts/ @doctocat @octocat

# @octocat owns any file in a /logs directory such as /build/logs,
# /scripts/logs, and /deeply/nested/logs.
**/logs @octocat

# @octocat owns any file in the /apps directory in the root of your
# repository except for the /apps/github subdirectory, as its owners are
# left empty.
/apps/ @octocat
/apps/github
`

func ownerNames(o []Owner) string {
	s := make([]string, len(o))
	for i, x := range o {
		s[i] = x.String()
	}
	return strings.Join(s, " ")
}

func TestCodeownersGitHubExamples(t *testing.T) {
	co := ParseCodeowners(githubExample)
	if len(co.Errors) != 0 {
		t.Fatalf("errors: %q", co.Errors)
	}
	tests := []struct {
		file, owners string
		line         int
	}{
		{"README.md", "@global-owner1 @global-owner2", 5},
		{"src/app.js", "@js-owner", 8},
		{"main.go", "docs@example.com", 11},
		{"notes/a.txt", "@octo-org/octocats", 14},
		{"build/logs/today.log", "@octocat", 37}, // **/logs comes later than /build/logs/
		{"build/logs/2026/today.log", "@octocat", 37},
		{"docs/getting-started.md", "@doctocat", 29}, // /docs/ comes later than docs/*
		{"docs/build-app/troubleshooting.md", "@doctocat", 29},
		{"web/apps/index.html", "@octocat", 25},
		{"scripts/deploy.sh", "@doctocat @octocat", 33},
		{"deeply/nested/logs/x.txt", "@octocat", 37},
		{"apps/main.c", "@octocat", 42},
		{"apps/github/main.c", "", 43}, // owners left empty: nobody
	}
	for _, tt := range tests {
		owners, rule, ok := co.Owners(tt.file)
		if !ok || ownerNames(owners) != tt.owners || rule.Line != tt.line {
			t.Errorf("Owners(%s) = %q (line %d, %v); want %q (line %d)", tt.file, ownerNames(owners), rule.Line, ok, tt.owners, tt.line)
		}
	}
}

func TestCodeownersPatterns(t *testing.T) {
	tests := []struct {
		pattern string
		match   []string
		miss    []string
	}{
		// docs/* alone: files directly in docs, not nested ones.
		{"docs/*", []string{"docs/getting-started.md"}, []string{"docs/build-app/troubleshooting.md", "x/docs/a.md"}},
		// A leading slash anchors; a trailing one means a directory.
		{"/build/logs/", []string{"build/logs/a", "build/logs/x/y"}, []string{"x/build/logs/a", "build/logs"}},
		{"apps/", []string{"apps/a", "x/apps/a/b"}, []string{"apps", "myapps/a"}},
		{"**/logs", []string{"logs/a", "a/b/logs/c", "logs"}, []string{"blogs/a"}},
		{"*.js", []string{"a.js", "x/y/a.js"}, []string{"a.jsx", "a.ts"}},
		{"/*.js", []string{"a.js"}, []string{"x/a.js"}},
		{"a/**/b", []string{"a/b", "a/x/b", "a/x/y/b/c"}, []string{"b", "x/a/b"}},
		{"src/", []string{"src/x", "lib/src/x"}, []string{"src"}},
		{"/src/lib", []string{"src/lib", "src/lib/a.go"}, []string{"x/src/lib"}},
		{"**", []string{"a", "a/b"}, nil},
		{"foo?.md", []string{"foo1.md", "d/fooa.md"}, []string{"foo.md", "foo12.md"}},
		{`\#notes`, []string{"#notes", "d/#notes/x"}, []string{"notes"}},
		{"Docs/", []string{"Docs/a"}, []string{"docs/a"}}, // case-sensitive
	}
	for _, tt := range tests {
		co := ParseCodeowners(tt.pattern + " @o")
		if len(co.Errors) != 0 {
			t.Fatalf("%s: %q", tt.pattern, co.Errors)
		}
		for _, f := range tt.match {
			if _, _, ok := co.Owners(f); !ok {
				t.Errorf("%q does not match %q", tt.pattern, f)
			}
		}
		for _, f := range tt.miss {
			if _, _, ok := co.Owners(f); ok {
				t.Errorf("%q matches %q", tt.pattern, f)
			}
		}
	}
}

func TestCodeownersParsing(t *testing.T) {
	co := ParseCodeowners("# comment\n\n  \n" +
		"a\\#b.txt @x # trailing\n" +
		"!negated @x\n" +
		"[ab].txt @x\n" +
		"ok.txt @good not-an-owner @org/team user@example.com\r\n")
	if len(co.Rules) != 2 {
		t.Fatalf("rules = %+v", co.Rules)
	}
	if _, _, ok := co.Owners("a#b.txt"); !ok {
		t.Error(`\# is not a literal #`)
	}
	r := co.Rules[1]
	if got := ownerNames(r.Owners); got != "@good @org/team user@example.com" || r.Line != 7 {
		t.Errorf("owners = %q (line %d)", got, r.Line)
	}
	want := []string{"line 5:", "line 6:", `line 7: invalid owner "not-an-owner"`}
	if len(co.Errors) != len(want) {
		t.Fatalf("errors = %q", co.Errors)
	}
	for i, w := range want {
		if !strings.HasPrefix(co.Errors[i], w) {
			t.Errorf("error %d = %q, want %q…", i, co.Errors[i], w)
		}
	}
}

func TestDirOwners(t *testing.T) {
	co := ParseCodeowners("* @all\n*.py @py\ndocs/* @docs\n/models/ @ml\n/models/iris/model/ @iris-weights\n/models/vision @org/vision\n")
	tests := []struct{ dir, owners string }{
		{"", "@all"},
		{"tools", "@all"},
		{"docs", "@docs"},
		{"docs/api", "@all"},   // docs/* owns only docs' own files
		{"lib.py", "@py"},      // a directory named like the pattern
		{"models/iris", "@ml"}, // model/ below has other owners, not the directory's files
		{"models/vision", "@org/vision"},
		{"models/vision/sub", "@org/vision"},
	}
	for _, tt := range tests {
		owners, _, _ := co.DirOwners(tt.dir)
		if got := ownerNames(owners); got != tt.owners {
			t.Errorf("DirOwners(%q) = %q, want %q", tt.dir, got, tt.owners)
		}
	}
	var none *Codeowners
	if _, _, ok := none.DirOwners("x"); ok {
		t.Error("no CODEOWNERS covers something")
	}
}

type fakeAccess map[string][2]string // login → permission, role_name

func (f fakeAccess) Permission(_ context.Context, login string) (string, string, error) {
	p, ok := f[login]
	if !ok {
		return "", "", errors.New("404 not a collaborator")
	}
	return p[0], p[1], nil
}

type fakeTeams map[string][]string // org/team → logins

func (f fakeTeams) IsTeamMember(_ context.Context, org, team, login string) (bool, error) {
	for _, l := range f[org+"/"+team] {
		if l == login {
			return true, nil
		}
	}
	return false, nil
}

func TestAuthorize(t *testing.T) {
	access := fakeAccess{
		"admin": {"admin", "admin"}, "maint": {"write", "maintain"}, "writer": {"write", "write"},
		"custom": {"write", "ml-deployer"}, "triager": {"read", "triage"}, "reader": {"read", "read"},
		"Owner": {"write", "write"}, "member": {"write", "write"},
	}
	teams := fakeTeams{"acme/ml": {"member"}}
	co := ParseCodeowners("/models/iris/ @owner @acme/ml\n/models/free/\n")
	tests := []struct {
		name, login string
		files       []string
		owners      *Codeowners
		allowed     bool
		silent      bool
		reason      string
	}{
		{"admin, no codeowners", "admin", []string{"models/iris/merlin.yaml"}, nil, true, false, ""},
		{"maintainer", "maint", []string{"m/merlin.yaml"}, nil, true, false, ""},
		{"writer", "writer", []string{"m/merlin.yaml"}, nil, true, false, ""},
		{"custom role on write", "custom", []string{"m/merlin.yaml"}, nil, true, false, ""},
		{"triage is not enough", "triager", []string{"m/merlin.yaml"}, nil, false, true, "triage"},
		{"reader", "reader", []string{"m/merlin.yaml"}, nil, false, true, "read"},
		{"writer not an owner", "writer", []string{"models/iris/merlin.yaml"}, co, false, false, "&#64;owner &#64;acme/ml; @writer is not among them"},
		{"owner, login case differs", "Owner", []string{"models/iris/merlin.yaml"}, co, true, false, ""},
		{"team member", "member", []string{"models/iris/merlin.yaml"}, co, true, false, ""},
		{"uncovered directory", "writer", []string{"models/other/merlin.yaml"}, co, true, false, ""},
		{"owners left empty", "writer", []string{"models/free/merlin.yaml"}, co, true, false, ""},
		{"one of two models not owned", "member", []string{"models/other/merlin.yaml", "models/iris/merlin.yaml"}, ParseCodeowners("/models/other/ @x\n/models/iris/ @acme/ml"), false, false, "&#64;x; @member"},
	}
	for _, tt := range tests {
		v, err := Authorize(context.Background(), access, teams, tt.owners, tt.login, tt.files)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if v.Allowed != tt.allowed || v.Silent != tt.silent || !strings.Contains(v.Reason, tt.reason) {
			t.Errorf("%s: %+v; want allowed %v, silent %v, reason containing %q", tt.name, v, tt.allowed, tt.silent, tt.reason)
		}
	}
	if _, err := Authorize(context.Background(), access, teams, nil, "stranger", nil); err == nil {
		t.Error("a failed permission lookup authorized")
	}
}

func FuzzParseCodeowners(f *testing.F) {
	f.Add(githubExample, "docs/a/b.md")
	f.Add("\\#x/**/y* @a\n!z\n[a] @b", "x/q/yy")
	f.Fuzz(func(t *testing.T, data, file string) {
		co := ParseCodeowners(data)
		_, rule, ok := co.Owners(file)
		if ok && rule.Line <= 0 {
			t.Fatalf("rule without a line: %+v", rule)
		}
		co.DirOwners(file)
	})
}

func TestCodeownersManyDoubleStars(t *testing.T) {
	co := ParseCodeowners(strings.Repeat("a/**/", 30) + "b @x")
	segs := strings.TrimSuffix(strings.Repeat("a/", 200), "/")
	if _, _, ok := co.Owners(segs); ok {
		t.Error("matched a path without b")
	}
	if _, _, ok := co.Owners(strings.Repeat("a/", 40) + "b"); !ok {
		t.Error("missed a path with b")
	}
}
