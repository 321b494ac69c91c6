package github

import (
	"context"
	"fmt"
	"unicode/utf8"

	gh "github.com/google/go-github/v60/github"
)

// State is a commit status's state.
type State string

// The states GitHub accepts.
const (
	Pending State = "pending"
	Success State = "success"
	Failure State = "failure"
	Error   State = "error"
)

// Status is one model's commit status.
type Status struct {
	Model string
	// Context, when set, is sent instead of merlin/<Model>.
	Context     string
	State       State
	Description string
	TargetURL   string
}

// MaxDescription is GitHub's limit on a status description, in characters.
const MaxDescription = 140

// Context is the status context of a model: merlin/<model>.
func Context(model string) string { return "merlin/" + model }

// TruncateDescription shortens s to GitHub's 140 characters, ending with
// an ellipsis when it cut.
func TruncateDescription(s string) string {
	if utf8.RuneCountInString(s) <= MaxDescription {
		return s
	}
	r := []rune(s)
	return string(r[:MaxDescription-1]) + "…"
}

// SetStatus sets the status merlin/<model> on sha; the description is cut
// to GitHub's 140 characters.
func (c *Client) SetStatus(ctx context.Context, sha string, s Status) error {
	if s.Context == "" {
		s.Context = Context(s.Model)
	}
	st := &gh.RepoStatus{
		State:       gh.String(string(s.State)),
		Context:     gh.String(s.Context),
		Description: gh.String(TruncateDescription(s.Description)),
	}
	if s.TargetURL != "" {
		st.TargetURL = gh.String(s.TargetURL)
	}
	if _, _, err := c.gh.Repositories.CreateStatus(ctx, c.owner, c.repo, sha, st); err != nil {
		return c.fail(fmt.Errorf("status %s on %s: %w", s.Context, sha, err))
	}
	return nil
}

// Permission returns user's permission on the repository as GitHub's
// collaborator-permission API tells it: permission is "admin", "write",
// "read" or "none" (also for an unknown user); roleName is the finer role
// ("maintain", "triage", or a custom role's name).
func (c *Client) Permission(ctx context.Context, user string) (permission, roleName string, err error) {
	p, _, err := c.gh.Repositories.GetPermissionLevel(ctx, c.owner, c.repo, user)
	if IsNotFound(err) {
		return "none", "", nil
	}
	if err != nil {
		return "", "", c.fail(fmt.Errorf("permission of %s: %w", user, err))
	}
	return p.GetPermission(), p.GetUser().GetRoleName(), nil
}

// IsTeamMember reports whether login is an active member of org/team (a
// CODEOWNERS owner like @acme/ml); a pending invitation is not membership.
func (c *Client) IsTeamMember(ctx context.Context, org, team, login string) (bool, error) {
	m, _, err := c.gh.Teams.GetTeamMembershipBySlug(ctx, org, team, login)
	if IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, c.fail(fmt.Errorf("membership of %s in %s/%s: %w", login, org, team, err))
	}
	return m.GetState() == "active", nil
}

// File returns the content of the file at path on ref; found is false
// when there is none (or path is a directory).
func (c *Client) File(ctx context.Context, path, ref string) (content []byte, found bool, err error) {
	f, _, _, err := c.gh.Repositories.GetContents(ctx, c.owner, c.repo, path, &gh.RepositoryContentGetOptions{Ref: ref})
	if IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, c.fail(fmt.Errorf("get %s@%s: %w", path, ref, err))
	}
	if f == nil {
		return nil, false, nil
	}
	s, err := f.GetContent()
	if err != nil {
		return nil, false, fmt.Errorf("decode %s@%s: %w", path, ref, err)
	}
	return []byte(s), true, nil
}

// CodeOwnersPaths are where GitHub looks for CODEOWNERS, in its order.
var CodeOwnersPaths = []string{".github/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS"}

// CodeOwners returns the CODEOWNERS file GitHub would use on ref and its
// path; found is false when there is none.
func (c *Client) CodeOwners(ctx context.Context, ref string) (content []byte, path string, found bool, err error) {
	for _, p := range CodeOwnersPaths {
		b, ok, err := c.File(ctx, p, ref)
		if err != nil || ok {
			return b, p, ok, err
		}
	}
	return nil, "", false, nil
}

// PullRequest is what the PR loop needs of a pull request.
type PullRequest struct {
	Number   int
	State    string // open, closed
	Merged   bool
	Title    string
	Author   string
	HeadSHA  string
	HeadRef  string
	HeadRepo string // owner/name; differs from BaseRepo for a fork
	BaseRef  string
	BaseRepo string
}

// Fork reports whether the head is in another repository.
func (p *PullRequest) Fork() bool { return p.HeadRepo != p.BaseRepo }

// PullRequest fetches pull request n.
func (c *Client) PullRequest(ctx context.Context, n int) (*PullRequest, error) {
	p, _, err := c.gh.PullRequests.Get(ctx, c.owner, c.repo, n)
	if err != nil {
		return nil, c.fail(fmt.Errorf("get pull request #%d: %w", n, err))
	}
	return toPullRequest(p), nil
}

// OpenPulls lists the repository's open pull requests into base (all pages,
// 100 per page, oldest first), conditionally: an unchanged list costs a 304,
// which GitHub does not count against the rate limit.
//
// Pages are walked until a short one, not by the Link header, for the
// reason FindComment gives: with 200 open pull requests and a 201st opened,
// page 2 is unchanged (304) and its cached Link names no page 3.
func (c *Client) OpenPulls(ctx context.Context, base string) ([]PullRequest, error) {
	opts := &gh.PullRequestListOptions{State: "open", Base: base, Sort: "created", Direction: "asc",
		ListOptions: gh.ListOptions{PerPage: perPage, Page: 1}}
	var out []PullRequest
	for {
		page, _, err := c.gh.PullRequests.List(ctx, c.owner, c.repo, opts)
		if err != nil {
			return nil, c.fail(fmt.Errorf("list open pull requests into %s (page %d): %w", base, opts.Page, err))
		}
		for _, p := range page {
			out = append(out, *toPullRequest(p))
		}
		if len(page) < perPage {
			return out, nil
		}
		opts.Page++
	}
}

// toPullRequest reads a pull request as GitHub shows it alone or in a
// list; a listed one has no merged field, only merged_at.
func toPullRequest(p *gh.PullRequest) *PullRequest {
	return &PullRequest{
		Number: p.GetNumber(), State: p.GetState(), Merged: p.GetMerged() || p.MergedAt != nil, Title: p.GetTitle(),
		Author:  p.GetUser().GetLogin(),
		HeadSHA: p.GetHead().GetSHA(), HeadRef: p.GetHead().GetRef(), HeadRepo: p.GetHead().GetRepo().GetFullName(),
		BaseRef: p.GetBase().GetRef(), BaseRepo: p.GetBase().GetRepo().GetFullName(),
	}
}
