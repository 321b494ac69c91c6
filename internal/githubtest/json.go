package githubtest

import (
	"crypto/sha1" //nolint:gosec // git's blob id, not security
	"encoding/base64"
	"fmt"
	"hash/fnv"
	"strings"
	"time"
)

// The fake's answers carry every field GitHub's description requires,
// shaped like GitHub's; the URLs point at api.github.com like the real ones.
const api = "https://api.github.com"

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func numericID(s string) int64 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(s))
	return int64(h.Sum32())
}

func userJSON(login string, bot bool) map[string]any {
	u := api + "/users/" + login
	typ := "User"
	if bot {
		typ = "Bot"
	}
	return map[string]any{
		"login": login, "id": numericID(login), "node_id": "U_" + login, "avatar_url": "https://avatars.githubusercontent.com/u/1",
		"gravatar_id": "", "url": u, "html_url": "https://github.com/" + login,
		"followers_url": u + "/followers", "following_url": u + "/following{/other_user}",
		"gists_url": u + "/gists{/gist_id}", "starred_url": u + "/starred{/owner}{/repo}",
		"subscriptions_url": u + "/subscriptions", "organizations_url": u + "/orgs", "repos_url": u + "/repos",
		"events_url": u + "/events{/privacy}", "received_events_url": u + "/received_events",
		"type": typ, "site_admin": false,
	}
}

func commentJSON(full string, issue int, c *Comment, bot bool) map[string]any {
	return map[string]any{
		"id": c.ID, "node_id": fmt.Sprintf("IC_%d", c.ID),
		"url":       fmt.Sprintf("%s/repos/%s/issues/comments/%d", api, full, c.ID),
		"html_url":  fmt.Sprintf("https://github.com/%s/pull/%d#issuecomment-%d", full, issue, c.ID),
		"issue_url": fmt.Sprintf("%s/repos/%s/issues/%d", api, full, issue),
		"body":      c.Body, "user": userJSON(c.Author, bot || strings.HasSuffix(c.Author, "[bot]")),
		"created_at": ts(c.Created), "updated_at": ts(c.Updated), "author_association": "MEMBER",
	}
}

func statusJSON(full, sha string, st Status, bot bool, now time.Time) map[string]any {
	var desc, target any
	if st.Description != "" {
		desc = st.Description
	}
	if st.TargetURL != "" {
		target = st.TargetURL
	}
	return map[string]any{
		"url": fmt.Sprintf("%s/repos/%s/statuses/%s", api, full, sha), "avatar_url": nil,
		"id": st.ID, "node_id": fmt.Sprintf("SC_%d", st.ID), "state": st.State,
		"description": desc, "target_url": target, "context": st.Context,
		"created_at": ts(now), "updated_at": ts(now), "creator": userJSON(st.Creator, bot),
	}
}

// permissionJSON maps a role to the legacy permission GitHub reports
// beside it: maintain → write, triage → read.
func permissionJSON(login, role string) map[string]any {
	perm := role
	switch role {
	case "maintain":
		perm = "write"
	case "triage":
		perm = "read"
	}
	u := userJSON(login, false)
	u["role_name"] = role
	u["permissions"] = map[string]any{"admin": role == "admin", "maintain": role == "admin" || role == "maintain",
		"push": perm == "write" || perm == "admin", "triage": role != "read", "pull": true}
	return map[string]any{"permission": perm, "role_name": role, "user": u}
}

func contentJSON(full, ref, path, content string) map[string]any {
	h := sha1.New() //nolint:gosec // git's blob id
	fmt.Fprintf(h, "blob %d\x00%s", len(content), content)
	sha := fmt.Sprintf("%x", h.Sum(nil))
	self := fmt.Sprintf("%s/repos/%s/contents/%s?ref=%s", api, full, path, ref)
	git := fmt.Sprintf("%s/repos/%s/git/blobs/%s", api, full, sha)
	html := fmt.Sprintf("https://github.com/%s/blob/%s/%s", full, ref, path)
	// GitHub wraps the base64 at 60 characters.
	enc := base64.StdEncoding.EncodeToString([]byte(content))
	var b strings.Builder
	for len(enc) > 60 {
		b.WriteString(enc[:60] + "\n")
		enc = enc[60:]
	}
	b.WriteString(enc + "\n")
	name := path[strings.LastIndex(path, "/")+1:]
	return map[string]any{
		"type": "file", "encoding": "base64", "size": len(content), "name": name, "path": path,
		"content": b.String(), "sha": sha, "url": self, "git_url": git, "html_url": html,
		"download_url": fmt.Sprintf("https://raw.githubusercontent.com/%s/%s/%s", full, ref, path),
		"_links":       map[string]any{"self": self, "git": git, "html": html},
	}
}

// repoURLs are a repository's *_url fields and their suffixes.
var repoURLs = map[string]string{
	"archive_url": "/{archive_format}{/ref}", "assignees_url": "/assignees{/user}", "blobs_url": "/git/blobs{/sha}",
	"branches_url": "/branches{/branch}", "collaborators_url": "/collaborators{/collaborator}",
	"comments_url": "/comments{/number}", "commits_url": "/commits{/sha}", "compare_url": "/compare/{base}...{head}",
	"contents_url": "/contents/{+path}", "contributors_url": "/contributors", "deployments_url": "/deployments",
	"downloads_url": "/downloads", "events_url": "/events", "forks_url": "/forks", "git_commits_url": "/git/commits{/sha}",
	"git_refs_url": "/git/refs{/sha}", "git_tags_url": "/git/tags{/sha}", "hooks_url": "/hooks",
	"issue_comment_url": "/issues/comments{/number}", "issue_events_url": "/issues/events{/number}",
	"issues_url": "/issues{/number}", "keys_url": "/keys{/key_id}", "labels_url": "/labels{/name}",
	"languages_url": "/languages", "merges_url": "/merges", "milestones_url": "/milestones{/number}",
	"notifications_url": "/notifications{?since,all,participating}", "pulls_url": "/pulls{/number}",
	"releases_url": "/releases{/id}", "stargazers_url": "/stargazers", "statuses_url": "/statuses/{sha}",
	"subscribers_url": "/subscribers", "subscription_url": "/subscription", "tags_url": "/tags",
	"teams_url": "/teams", "trees_url": "/git/trees{/sha}",
}

func repoJSON(full string) map[string]any {
	owner, name, _ := strings.Cut(full, "/")
	base := api + "/repos/" + full
	r := map[string]any{
		"id": numericID(full), "node_id": "R_" + name, "name": name, "full_name": full,
		"owner": userJSON(owner, false), "private": false, "html_url": "https://github.com/" + full,
		"description": nil, "fork": false, "url": base, "clone_url": "https://github.com/" + full + ".git",
		"git_url": "git://github.com/" + full + ".git", "ssh_url": "git@github.com:" + full + ".git",
		"svn_url": "https://github.com/" + full, "mirror_url": nil, "homepage": nil, "language": "Python",
		"default_branch": "main", "forks": 0, "forks_count": 0, "stargazers_count": 0, "watchers": 0,
		"watchers_count": 0, "size": 1, "open_issues": 0, "open_issues_count": 0, "has_issues": true,
		"has_projects": true, "has_wiki": true, "has_pages": false, "has_downloads": true, "archived": false,
		"disabled": false, "license": nil, "pushed_at": "2026-01-01T00:00:00Z",
		"created_at": "2025-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
	}
	for k, suffix := range repoURLs {
		r[k] = base + suffix
	}
	return r
}

// pullJSON is a pull request as GET /repos/{owner}/{repo}/pulls/{pull_number}
// shows it (schema pull-request).
func pullJSON(full string, p *Pull) map[string]any {
	base := fmt.Sprintf("%s/repos/%s/pulls/%d", api, full, p.Number)
	issue := fmt.Sprintf("%s/repos/%s/issues/%d", api, full, p.Number)
	html := fmt.Sprintf("https://github.com/%s/pull/%d", full, p.Number)
	headOwner, _, _ := strings.Cut(p.HeadRepo, "/")
	baseOwner, _, _ := strings.Cut(full, "/")
	var closedAt, mergedAt any
	if !p.closed.IsZero() {
		closedAt = ts(p.closed)
	}
	if !p.merged.IsZero() {
		mergedAt = ts(p.merged)
	}
	link := func(h string) map[string]any { return map[string]any{"href": h} }
	return map[string]any{
		"url": base, "id": numericID(base), "node_id": fmt.Sprintf("PR_%d", p.Number), "html_url": html,
		"diff_url": html + ".diff", "patch_url": html + ".patch", "issue_url": issue,
		"commits_url": base + "/commits", "review_comments_url": base + "/comments",
		"review_comment_url": fmt.Sprintf("%s/repos/%s/pulls/comments{/number}", api, full),
		"comments_url":       issue + "/comments", "statuses_url": fmt.Sprintf("%s/repos/%s/statuses/%s", api, full, p.HeadSHA),
		"number": p.Number, "state": p.State, "locked": false, "title": p.Title, "user": userJSON(p.Author, false),
		"body": nil, "labels": []any{}, "milestone": nil, "active_lock_reason": nil,
		"created_at": ts(p.created), "updated_at": ts(p.updated), "closed_at": closedAt, "merged_at": mergedAt,
		"merge_commit_sha": nil, "assignee": nil, "assignees": []any{}, "requested_reviewers": []any{},
		"requested_teams": []any{}, "draft": false, "author_association": "CONTRIBUTOR", "auto_merge": nil,
		"head": map[string]any{"label": headOwner + ":" + p.HeadRef, "ref": p.HeadRef, "sha": p.HeadSHA,
			"user": userJSON(headOwner, false), "repo": repoJSON(p.HeadRepo)},
		"base": map[string]any{"label": baseOwner + ":" + p.BaseRef, "ref": p.BaseRef, "sha": p.BaseSHA,
			"user": userJSON(baseOwner, false), "repo": repoJSON(full)},
		"_links": map[string]any{"self": link(base), "html": link(html), "issue": link(issue),
			"comments": link(issue + "/comments"), "review_comments": link(base + "/comments"),
			"review_comment": link(fmt.Sprintf("%s/repos/%s/pulls/comments{/number}", api, full)),
			"commits":        link(base + "/commits"), "statuses": link(fmt.Sprintf("%s/repos/%s/statuses/%s", api, full, p.HeadSHA))},
		"merged": p.Merged, "mergeable": true, "rebaseable": true, "mergeable_state": "clean", "merged_by": nil,
		"comments": 0, "review_comments": 0, "maintainer_can_modify": false, "commits": 1, "additions": 1,
		"deletions": 0, "changed_files": 1,
	}
}

// pullSimpleJSON is a pull request as the list of pull requests shows it
// (schema pull-request-simple): without merged, mergeable, the counts and
// the other fields GitHub only computes for one pull request.
func pullSimpleJSON(full string, p *Pull) map[string]any {
	m := pullJSON(full, p)
	for _, k := range []string{"merged", "mergeable", "rebaseable", "mergeable_state", "merged_by", "comments",
		"review_comments", "maintainer_can_modify", "commits", "additions", "deletions", "changed_files"} {
		delete(m, k)
	}
	return m
}
