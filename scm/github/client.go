package github

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	gh "github.com/google/go-github/v60/github"
)

// DefaultAPIURL is github.com's API.
const DefaultAPIURL = "https://api.github.com/"

// Options configure a Client; they mirror the config's github block.
type Options struct {
	// Repo is "owner/name".
	Repo string
	// APIURL is the API's base: DefaultAPIURL when empty; GitHub
	// Enterprise's is https://HOST/api/v3.
	APIURL string
	// TokenEnv names the environment variable holding a token. Exactly
	// one of TokenEnv and App is set.
	TokenEnv string
	// App authenticates as a GitHub App installation instead.
	App *App
	// Transport sends the requests; http.DefaultTransport when nil.
	Transport http.RoundTripper
	// Metrics counts the calls; a fresh, unregistered one when nil.
	Metrics *Metrics
	// Log gets the waits and retries; slog.Default() when nil.
	Log *slog.Logger
	// Policy bounds waits and retries; DefaultPolicy when zero.
	Policy Policy
	// Now is the clock for JWTs, token expiry and rate-limit resets.
	Now func() time.Time
}

// Client talks to one repository.
type Client struct {
	gh          *gh.Client
	owner, repo string
	secrets     *secrets
	metrics     *Metrics
}

// New builds a Client; it sends nothing until an operation is called.
func New(o Options) (*Client, error) {
	owner, repo, ok := strings.Cut(o.Repo, "/")
	if !ok || owner == "" || repo == "" || strings.Contains(repo, "/") {
		return nil, fmt.Errorf("github repo %q: want owner/name", o.Repo)
	}
	apiURL := o.APIURL
	if apiURL == "" {
		apiURL = DefaultAPIURL
	}
	if !strings.HasSuffix(apiURL, "/") {
		apiURL += "/"
	}
	if o.Transport == nil {
		o.Transport = http.DefaultTransport
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Policy == (Policy{}) {
		o.Policy = DefaultPolicy
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	c := &Client{owner: owner, repo: repo, secrets: &secrets{}, metrics: o.Metrics}
	// Below auth: retries and counting, shared with the token minting.
	inner := &retryTransport{next: &countTransport{next: o.Transport, metrics: o.Metrics}, policy: o.Policy, log: o.Log, now: o.Now}
	var (
		token      func(context.Context) (string, error)
		invalidate func(string)
	)
	switch {
	case o.App != nil && o.TokenEnv != "":
		return nil, errors.New("github: set tokenEnv or app, not both")
	case o.App != nil:
		tokens, err := newAppTokens(*o.App, apiURL, &http.Client{Transport: inner}, o.Now, c.secrets)
		if err != nil {
			return nil, err
		}
		token, invalidate = tokens.Token, tokens.Invalidate
	case o.TokenEnv != "":
		t := os.Getenv(o.TokenEnv)
		if t == "" {
			return nil, fmt.Errorf("github token: $%s is empty", o.TokenEnv)
		}
		c.secrets.add(t)
		token = func(context.Context) (string, error) { return t, nil }
	default:
		return nil, errors.New("github: neither tokenEnv nor app is set")
	}
	hc := &http.Client{Transport: &etagTransport{next: &authTransport{next: inner, token: token, invalidate: invalidate}, max: 512}}
	g := gh.NewClient(hc)
	if apiURL != DefaultAPIURL {
		var err error
		if g, err = g.WithEnterpriseURLs(apiURL, apiURL); err != nil {
			return nil, fmt.Errorf("github apiURL %q: %w", apiURL, err)
		}
	}
	c.gh = g
	return c, nil
}

// Metrics returns the client's counters, to register on /metrics.
func (c *Client) Metrics() *Metrics { return c.metrics }

// Comment is an issue or pull-request comment.
type Comment struct {
	ID     int64
	Body   string
	Author string
	URL    string // html_url
}

func toComment(c *gh.IssueComment) *Comment {
	return &Comment{ID: c.GetID(), Body: c.GetBody(), Author: c.GetUser().GetLogin(), URL: c.GetHTMLURL()}
}

// perPage is the most comments GitHub lists on one page.
const perPage = 100

// FindComment returns the first comment on pull request pr whose body
// contains marker, or nil when there is none. Every page is a conditional
// request: an unchanged one costs no rate limit.
//
// Pages are walked until a short one, not by the Link header: a full page
// that has not changed answers 304, and the Link header cached with it can
// predate the page after it (100 comments, then a 101st).
func (c *Client) FindComment(ctx context.Context, pr int, marker string) (*Comment, error) {
	opts := &gh.IssueListCommentsOptions{ListOptions: gh.ListOptions{PerPage: perPage, Page: 1}}
	for {
		page, _, err := c.gh.Issues.ListComments(ctx, c.owner, c.repo, pr, opts)
		if err != nil {
			return nil, c.fail(fmt.Errorf("list comments of #%d: %w", pr, err))
		}
		for _, cm := range page {
			if strings.Contains(cm.GetBody(), marker) {
				return toComment(cm), nil
			}
		}
		if len(page) < perPage {
			return nil, nil
		}
		opts.Page++
	}
}

// CreateComment posts a comment on pull request pr.
func (c *Client) CreateComment(ctx context.Context, pr int, body string) (*Comment, error) {
	cm, _, err := c.gh.Issues.CreateComment(ctx, c.owner, c.repo, pr, &gh.IssueComment{Body: &body})
	if err != nil {
		return nil, c.fail(fmt.Errorf("comment on #%d: %w", pr, err))
	}
	return toComment(cm), nil
}

// EditComment replaces comment id's body.
func (c *Client) EditComment(ctx context.Context, id int64, body string) (*Comment, error) {
	cm, _, err := c.gh.Issues.EditComment(ctx, c.owner, c.repo, id, &gh.IssueComment{Body: &body})
	if err != nil {
		return nil, c.fail(fmt.Errorf("edit comment %d: %w", id, err))
	}
	return toComment(cm), nil
}

// fail scrubs secrets from an error on its way out.
func (c *Client) fail(err error) error { return c.secrets.scrub(err) }

// IsNotFound reports whether err is GitHub's 404.
func IsNotFound(err error) bool {
	var e *gh.ErrorResponse
	return errors.As(err, &e) && e.Response != nil && e.Response.StatusCode == http.StatusNotFound
}
