package githubtest

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Pull is a pull request the fake knows.
type Pull struct {
	Number int
	Title  string
	Author string
	State  string // open (default), closed
	Merged bool
	// HeadRepo is owner/name of the head; the base repository when empty.
	HeadRepo string
	HeadRef  string
	HeadSHA  string
	BaseRef  string // main when empty
	BaseSHA  string

	// Set by the fake: when it was added, last changed, closed and merged,
	// for created_at, updated_at, closed_at and merged_at (and the ETags).
	created, updated, closed, merged time.Time
}

// Comment is an issue comment the fake holds.
type Comment struct {
	ID      int64
	Author  string
	Body    string
	Created time.Time
	Updated time.Time
}

// Status is a commit status the fake holds.
type Status struct {
	ID          int64
	Context     string
	State       string
	Description string
	TargetURL   string
	Creator     string
}

type repoState struct {
	comments map[int][]*Comment
	statuses map[string][]Status // by sha
	roles    map[string]string   // login → admin, maintain, write, triage, read
	pulls    map[int]*Pull
	files    map[string]map[string]string // ref → path → content
}

// repo returns a repository's state, creating it.
func (s *Server) repo(full string) *repoState {
	r, ok := s.repos[full]
	if !ok {
		r = &repoState{comments: map[int][]*Comment{}, statuses: map[string][]Status{}, roles: map[string]string{},
			pulls: map[int]*Pull{}, files: map[string]map[string]string{}}
		s.repos[full] = r
	}
	return r
}

func checkRepo(full string) {
	if o, n, ok := strings.Cut(full, "/"); !ok || o == "" || n == "" {
		panic(fmt.Sprintf("githubtest: repo %q: want owner/name", full))
	}
}

// AddPull opens (or replaces) a pull request.
func (s *Server) AddPull(repo string, p Pull) {
	checkRepo(repo)
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repo(repo)
	if old := r.pulls[p.Number]; old != nil {
		p.created, p.updated, p.closed, p.merged = old.created, old.updated, old.closed, old.merged
	} else {
		p.created = s.clock().Truncate(time.Second)
	}
	s.touch(repo, &p)
	r.pulls[p.Number] = &p
}

// UpdatePull changes pull request n of repo with f (close it, merge it,
// push to it, retitle it), as if on GitHub: its updated_at moves on, so
// every answer that shows it gets a new ETag. It panics when there is no
// such pull request.
func (s *Server) UpdatePull(repo string, n int, f func(*Pull)) {
	checkRepo(repo)
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.repo(repo).pulls[n]
	if old == nil {
		panic(fmt.Sprintf("githubtest: UpdatePull: %s has no pull request #%d", repo, n))
	}
	p := *old
	f(&p)
	p.Number = n
	s.touch(repo, &p)
	s.repos[repo].pulls[n] = &p
}

// Pulls returns repo's pull requests, by number.
func (s *Server) Pulls(repo string) []Pull {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repo(repo)
	out := make([]Pull, 0, len(r.pulls))
	for _, n := range sortedPulls(r) {
		out = append(out, *r.pulls[n])
	}
	return out
}

func sortedPulls(r *repoState) []int {
	ns := make([]int, 0, len(r.pulls))
	for n := range r.pulls {
		ns = append(ns, n)
	}
	sort.Ints(ns)
	return ns
}

// touch fills p's defaults and moves its updated_at on by at least a
// second (GitHub's timestamps have seconds), recording when it closed or
// merged.
func (s *Server) touch(repo string, p *Pull) {
	if p.State == "" {
		p.State = "open"
	}
	if p.Merged {
		p.State = "closed"
	}
	if p.BaseRef == "" {
		p.BaseRef = "main"
	}
	if p.HeadRepo == "" {
		p.HeadRepo = repo
	}
	now := s.clock().Truncate(time.Second)
	if !now.After(p.updated) && !p.updated.IsZero() {
		now = p.updated.Add(time.Second)
	}
	p.updated = now
	switch {
	case p.State != "closed":
		p.closed = time.Time{}
	case p.closed.IsZero():
		p.closed = now
	}
	switch {
	case !p.Merged:
		p.merged = time.Time{}
	case p.merged.IsZero():
		p.merged = now
	}
}

// SetPermission gives login a role on repo: admin, maintain, write,
// triage or read.
func (s *Server) SetPermission(repo, login, role string) {
	checkRepo(repo)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.repo(repo).roles[login] = role
}

// SetTeamMember makes login a member of org/team; state is "active" or
// "pending" (invited).
func (s *Server) SetTeamMember(org, team, login, state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := org + "/" + team
	if s.teams[key] == nil {
		s.teams[key] = map[string]string{}
	}
	s.teams[key][login] = state
}

// SetFile puts a file on ref (a branch or SHA).
func (s *Server) SetFile(repo, ref, path, content string) {
	checkRepo(repo)
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repo(repo)
	if r.files[ref] == nil {
		r.files[ref] = map[string]string{}
	}
	r.files[ref][path] = content
}

// AddComment posts a comment as login, as if through the web UI.
func (s *Server) AddComment(repo string, issue int, login, body string) int64 {
	checkRepo(repo)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addComment(s.repo(repo), issue, login, body, s.clock()).ID
}

func (s *Server) addComment(r *repoState, issue int, login, body string, now time.Time) *Comment {
	s.nextID++
	c := &Comment{ID: s.nextID, Author: login, Body: body, Created: now, Updated: now}
	r.comments[issue] = append(r.comments[issue], c)
	return c
}

// Comments returns the comments on an issue or pull request, oldest first.
func (s *Server) Comments(repo string, issue int) []Comment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Comment
	for _, c := range s.repo(repo).comments[issue] {
		out = append(out, *c)
	}
	return out
}

// Statuses returns the statuses set on sha, oldest first.
func (s *Server) Statuses(repo, sha string) []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Status(nil), s.repo(repo).statuses[sha]...)
}

// LatestStatuses returns the newest status of each context on sha, as
// GitHub's combined status shows them.
func (s *Server) LatestStatuses(repo, sha string) map[string]Status {
	out := map[string]Status{}
	for _, st := range s.Statuses(repo, sha) {
		out[strings.ToLower(st.Context)] = st
	}
	return out
}

// comment finds a comment by id in any issue of r.
func (r *repoState) comment(id int64) *Comment {
	issues := make([]int, 0, len(r.comments))
	for n := range r.comments {
		issues = append(issues, n)
	}
	sort.Ints(issues)
	for _, n := range issues {
		for _, c := range r.comments[n] {
			if c.ID == id {
				return c
			}
		}
	}
	return nil
}
