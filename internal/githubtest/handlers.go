package githubtest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// GitHub's limits that the description does not state.
const (
	maxCommentBody  = 65536
	maxDescription  = 140
	defaultPerPage  = 30
	maxPerPage      = 100
	installationBot = "merlin[bot]"
)

// authenticate checks the credentials the way GitHub does: an App JWT
// (RS256, signed by a registered app, iat in the past, at most 10 minutes
// long) for the access-tokens endpoint, a known unexpired token elsewhere.
func (s *Server) authenticate(r *http.Request, endpoint string, now time.Time) (identity, bool) {
	auth := r.Header.Get("Authorization")
	cred, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok {
		cred, ok = strings.CutPrefix(auth, "token ")
	}
	if !ok || cred == "" {
		return identity{}, false
	}
	if endpoint == "/app/installations/{installation_id}/access_tokens" {
		return s.checkJWT(cred, now)
	}
	id, ok := s.tokens[cred]
	if !ok || (!id.expires.IsZero() && !now.Before(id.expires)) {
		return identity{}, false
	}
	return id, true
}

func (s *Server) checkJWT(raw string, now time.Time) (identity, bool) {
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(raw, &claims, func(t *jwt.Token) (any, error) {
		iss, _ := t.Claims.GetIssuer()
		id, err := strconv.ParseInt(iss, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("iss %q is not an app id", iss)
		}
		key, ok := s.apps[id]
		if !ok {
			return nil, fmt.Errorf("no app %d", id)
		}
		return key, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithIssuedAt(), jwt.WithExpirationRequired(), jwt.WithLeeway(time.Minute))
	if err != nil {
		return identity{}, false
	}
	if claims.IssuedAt == nil || claims.ExpiresAt.Sub(claims.IssuedAt.Time) > 10*time.Minute {
		return identity{}, false // GitHub: "Expiration time' claim ('exp') is too far in the future"
	}
	return identity{login: "app"}, true
}

// handle answers an authenticated, valid request.
func (s *Server) handle(r *http.Request, who identity, endpoint string, p map[string]string, body []byte, now time.Time) reply {
	var in map[string]any
	if len(body) > 0 {
		if err := json.Unmarshal(body, &in); err != nil {
			return errorReply(http.StatusBadRequest, "Problems parsing JSON")
		}
	}
	if endpoint == "/app/installations/{installation_id}/access_tokens" {
		return s.mintToken(now)
	}
	if who.login == "app" {
		return errorReply(http.StatusUnauthorized, "A JSON web token could not be decoded")
	}
	if endpoint == "/orgs/{org}/teams/{team_slug}/memberships/{username}" {
		state, ok := s.teams[p["org"]+"/"+p["team_slug"]][p["username"]]
		if !ok {
			return errorReply(http.StatusNotFound, "Not Found")
		}
		return jsonReply(http.StatusOK, map[string]any{"state": state, "role": "member",
			"url": fmt.Sprintf("%s/organizations/1/team/2/memberships/%s", api, p["username"])})
	}
	full := p["owner"] + "/" + p["repo"]
	repo, ok := s.repos[full]
	if !ok {
		return errorReply(http.StatusNotFound, "Not Found")
	}
	switch r.Method + " " + endpoint {
	case "GET /repos/{owner}/{repo}/issues/{issue_number}/comments":
		return s.listComments(r, full, repo, atoi(p["issue_number"]))
	case "POST /repos/{owner}/{repo}/issues/{issue_number}/comments":
		return s.writeComment(full, repo, atoi(p["issue_number"]), 0, in, who, now)
	case "PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}":
		return s.writeComment(full, repo, 0, int64(atoi(p["comment_id"])), in, who, now)
	case "POST /repos/{owner}/{repo}/statuses/{sha}":
		return s.createStatus(full, repo, p["sha"], in, who, now)
	case "GET /repos/{owner}/{repo}/collaborators/{username}/permission":
		role, ok := repo.roles[p["username"]]
		if !ok {
			return errorReply(http.StatusNotFound, "Not Found")
		}
		return jsonReply(http.StatusOK, permissionJSON(p["username"], role))
	case "GET /repos/{owner}/{repo}/contents/{path}":
		ref := r.URL.Query().Get("ref")
		if ref == "" {
			ref = "main"
		}
		content, ok := repo.files[ref][p["path"]]
		if !ok {
			return errorReply(http.StatusNotFound, "Not Found")
		}
		return jsonReply(http.StatusOK, contentJSON(full, ref, p["path"], content))
	case "GET /repos/{owner}/{repo}/pulls/{pull_number}":
		pr := repo.pulls[atoi(p["pull_number"])]
		if pr == nil {
			return errorReply(http.StatusNotFound, "Not Found")
		}
		return jsonReply(http.StatusOK, pullJSON(full, pr))
	case "GET /repos/{owner}/{repo}/pulls":
		return s.listPulls(r, full, repo)
	}
	s.mu.Unlock()
	s.refuse("%s %s: the fake does not implement it", r.Method, endpoint)
	s.mu.Lock()
	return errorReply(http.StatusNotFound, "Not Found")
}

// writeComment creates a comment on issue, or edits comment id when set.
func (s *Server) writeComment(full string, repo *repoState, issue int, id int64, in map[string]any, who identity, now time.Time) reply {
	text, _ := in["body"].(string)
	if utf8.RuneCountInString(text) > maxCommentBody {
		return errorReply(http.StatusUnprocessableEntity, "Validation Failed: body is too long (maximum is 65536 characters)")
	}
	if id == 0 {
		if repo.pulls[issue] == nil {
			return errorReply(http.StatusNotFound, "Not Found")
		}
		return jsonReply(http.StatusCreated, commentJSON(full, issue, s.addComment(repo, issue, who.login, text, now), who.bot))
	}
	c := repo.comment(id)
	if c == nil {
		return errorReply(http.StatusNotFound, "Not Found")
	}
	c.Body, c.Updated = text, now
	return jsonReply(http.StatusOK, commentJSON(full, issueOf(repo, c.ID), c, who.bot))
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func issueOf(r *repoState, id int64) int {
	for n, cs := range r.comments {
		for _, c := range cs {
			if c.ID == id {
				return n
			}
		}
	}
	return 0
}

func (s *Server) mintToken(now time.Time) reply {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	tok := "ghs_" + hex.EncodeToString(b)
	exp := now.Add(s.tokenTTL)
	s.tokens[tok] = identity{login: installationBot, bot: true, expires: exp}
	return jsonReply(http.StatusCreated, map[string]any{
		"token": tok, "expires_at": exp.UTC().Format(time.RFC3339),
		"permissions":          map[string]any{"issues": "write", "statuses": "write", "contents": "read", "pull_requests": "read"},
		"repository_selection": "selected",
	})
}

// listComments pages like GitHub: per_page (default 30, at most 100),
// page from 1, Link rel=next/last/first/prev.
func (s *Server) listComments(r *http.Request, full string, repo *repoState, n int) reply {
	if repo.pulls[n] == nil {
		return errorReply(http.StatusNotFound, "Not Found")
	}
	all := repo.comments[n]
	from, to, link := paginate(r, len(all))
	items := []any{}
	for _, c := range all[from:to] {
		items = append(items, commentJSON(full, n, c, c.Author == installationBot))
	}
	return withLink(jsonReply(http.StatusOK, items), link)
}

// listPulls filters by state (open when absent, closed, all), base and
// head (owner:ref), sorts by created (default, descending unless
// direction=asc) or updated (ascending unless direction=desc), ties by
// number, and pages like listComments.
func (s *Server) listPulls(r *http.Request, full string, repo *repoState) reply {
	q := r.URL.Query()
	state := q.Get("state")
	if state == "" {
		state = "open"
	}
	var pulls []*Pull
	for _, n := range sortedPulls(repo) {
		p := repo.pulls[n]
		headOwner, _, _ := strings.Cut(p.HeadRepo, "/")
		switch {
		case state != "all" && p.State != state,
			q.Has("base") && p.BaseRef != q.Get("base"),
			q.Has("head") && headOwner+":"+p.HeadRef != q.Get("head"):
			continue
		}
		pulls = append(pulls, p)
	}
	by := q.Get("sort")
	desc := q.Get("direction") == "desc"
	switch by {
	case "", "created":
		desc = q.Get("direction") != "asc"
	case "updated":
	default:
		s.mu.Unlock()
		s.refuse("GET /repos/%s/pulls: the fake does not sort by %q", full, by)
		s.mu.Lock()
		return errorReply(http.StatusUnprocessableEntity, "Validation Failed")
	}
	key := func(p *Pull) time.Time {
		if by == "updated" {
			return p.updated
		}
		return p.created
	}
	sort.SliceStable(pulls, func(i, j int) bool {
		a, b := pulls[i], pulls[j]
		if desc {
			a, b = b, a
		}
		if !key(a).Equal(key(b)) {
			return key(a).Before(key(b))
		}
		return a.Number < b.Number
	})
	from, to, link := paginate(r, len(pulls))
	items := []any{}
	for _, p := range pulls[from:to] {
		items = append(items, pullSimpleJSON(full, p))
	}
	return withLink(jsonReply(http.StatusOK, items), link)
}

// paginate reads per_page (default 30, at most 100) and page (from 1) and
// returns the page's slice bounds of n items and its Link header as GitHub
// writes it: rel=next and last unless on the last page, first and prev
// after the first, each the request's URL with its query kept and page
// (and per_page) set.
func paginate(r *http.Request, n int) (from, to int, link string) {
	q := r.URL.Query()
	per := defaultPerPage
	if v := q.Get("per_page"); v != "" {
		per = min(max(atoi(v), 1), maxPerPage)
	}
	page := max(atoi(q.Get("page")), 1)
	last := max((n+per-1)/per, 1)
	at := func(p int, rel string) string {
		v := r.URL.Query()
		v.Set("per_page", strconv.Itoa(per))
		v.Set("page", strconv.Itoa(p))
		u := url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path, RawQuery: v.Encode()}
		return fmt.Sprintf("<%s>; rel=%q", u.String(), rel)
	}
	var links []string
	if page < last {
		links = append(links, at(page+1, "next"), at(last, "last"))
	}
	if page > 1 {
		links = append(links, at(1, "first"), at(page-1, "prev"))
	}
	if page > last {
		return n, n, strings.Join(links, ", ")
	}
	return (page - 1) * per, min(page*per, n), strings.Join(links, ", ")
}

func withLink(rep reply, link string) reply {
	if link != "" {
		rep.header.Set("Link", link)
	}
	return rep
}

func (s *Server) createStatus(full string, repo *repoState, sha string, in map[string]any, who identity, now time.Time) reply {
	str := func(k string) string { v, _ := in[k].(string); return v }
	if utf8.RuneCountInString(str("description")) > maxDescription {
		s.mu.Unlock()
		s.refuse("POST statuses/%s: description is %d characters (GitHub allows %d)", sha, utf8.RuneCountInString(str("description")), maxDescription)
		s.mu.Lock()
		return errorReply(http.StatusUnprocessableEntity, "Validation Failed: description is too long (maximum is 140 characters)")
	}
	ctx := str("context")
	if ctx == "" {
		ctx = "default"
	}
	s.nextID++
	st := Status{ID: s.nextID, Context: ctx, State: str("state"), Description: str("description"), TargetURL: str("target_url"), Creator: who.login}
	repo.statuses[sha] = append(repo.statuses[sha], st)
	return jsonReply(http.StatusCreated, statusJSON(full, sha, st, who.bot, now))
}
