package githubtest

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
)

// RateLimit is the hourly budget each new window starts with.
const RateLimit = 5000

// Call is one request the fake answered.
type Call struct {
	Method string
	// Path is the request path without the /api/v3 prefix or the query.
	Path string
	// Endpoint is the description's path template, "" for none.
	Endpoint string
	Query    string
	Status   int
	// Identity is who the credentials named: a token's login, "app" for an
	// App JWT, "" for none or bad ones.
	Identity string
}

// Write reports whether the call could change state.
func (c Call) Write() bool { return c.Method != http.MethodGet && c.Method != http.MethodHead }

// Fault is an answer injected instead of the real one.
type Fault struct {
	Status int
	// RetryAfter, when set, is sent as Retry-After (seconds).
	RetryAfter int
	// Reset, when set, exhausts the rate limit until then:
	// X-RateLimit-Remaining: 0 and X-RateLimit-Reset.
	Reset time.Time
	// Message is the JSON body's message.
	Message string
	// EchoAuthorization appends the request's Authorization header to the
	// message, as a careless proxy might: the client must scrub it.
	EchoAuthorization bool
}

// RateLimited is GitHub's primary rate limit: 403, remaining 0, reset at.
func RateLimited(reset time.Time) Fault {
	return Fault{Status: http.StatusForbidden, Reset: reset, Message: "API rate limit exceeded for installation."}
}

// TooManyRequests is a 429 with Retry-After.
func TooManyRequests(retryAfter int) Fault {
	return Fault{Status: http.StatusTooManyRequests, RetryAfter: retryAfter, Message: "You have exceeded a secondary rate limit."}
}

// BadGateway is a 502 from GitHub's front end.
func BadGateway() Fault {
	return Fault{Status: http.StatusBadGateway, Message: "Server Error"}
}

// Server is the fake GitHub.
type Server struct {
	// URL is the API base to give a client, GitHub Enterprise style
	// (http://127.0.0.1:PORT/api/v3); the root works as well.
	URL string

	t   testing.TB
	srv *httptest.Server
	doc *openapi3.T

	mu            sync.Mutex
	now           func() time.Time
	offset        time.Duration
	expectInvalid bool
	invalid       []error
	calls         []Call
	faults        []Fault
	blockedUntil  time.Time // a rate limit announced is in force until then
	remaining     int
	windowReset   time.Time

	tokens   map[string]identity // token → who
	apps     map[int64]*rsa.PublicKey
	tokenTTL time.Duration
	nextID   int64
	repos    map[string]*repoState
	teams    map[string]map[string]string // org/team → login → active, pending
}

type identity struct {
	login   string
	bot     bool
	expires time.Time // zero: never
}

// New starts a fake GitHub, closed when the test ends.
func New(t testing.TB) *Server {
	t.Helper()
	doc, err := loadSpec()
	if err != nil {
		t.Fatalf("githubtest: %v", err)
	}
	s := &Server{
		t: t, doc: doc, now: time.Now, remaining: RateLimit,
		tokens: map[string]identity{}, apps: map[int64]*rsa.PublicKey{}, tokenTTL: time.Hour,
		nextID: 1000, repos: map[string]*repoState{}, teams: map[string]map[string]string{},
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	s.URL = s.srv.URL + "/api/v3"
	return s
}

// Now is the fake's clock: the wall clock plus what Advance added.
func (s *Server) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clock()
}

func (s *Server) clock() time.Time { return s.now().Add(s.offset) }

// Advance moves the fake's clock, e.g. past an installation token's expiry.
func (s *Server) Advance(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offset += d
}

// AddToken accepts token as login's credentials (a personal access token).
func (s *Server) AddToken(token, login string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = identity{login: login}
}

// AddApp accepts JWTs signed by key for app id; its installations get
// tokens valid for ttl (GitHub: one hour).
func (s *Server) AddApp(id int64, key *rsa.PublicKey, ttl time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apps[id] = key
	s.tokenTTL = ttl
}

// RevokeTokens revokes every installation token, as GitHub does when an
// app is suspended or reinstalled.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for tok, id := range s.tokens {
		if !id.expires.IsZero() {
			delete(s.tokens, tok)
		}
	}
}

// Fail answers the next n calls with f instead.
func (s *Server) Fail(n int, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults = append(s.faults, f)
	}
}

// ExpectInvalid records refused requests (InvalidRequests) instead of
// failing the test, for a test that sends one on purpose.
func (s *Server) ExpectInvalid() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expectInvalid = true
}

// InvalidRequests returns what the fake refused since ExpectInvalid.
func (s *Server) InvalidRequests() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.invalid...)
}

// Calls returns the call log.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// CallsTo returns the logged calls of one operation, e.g.
// CallsTo("GET", "/repos/{owner}/{repo}/issues/{issue_number}/comments").
func (s *Server) CallsTo(method, endpoint string) []Call {
	var out []Call
	for _, c := range s.Calls() {
		if c.Method == method && c.Endpoint == endpoint {
			out = append(out, c)
		}
	}
	return out
}

// ResetCalls empties the call log.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = nil
}

// RateLimitRemaining is what the next response's X-RateLimit-Remaining
// says, before that call.
func (s *Server) RateLimitRemaining() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.remaining
}

// refuse reports a request the real API would refuse.
func (s *Server) refuse(format string, args ...any) {
	err := fmt.Errorf(format, args...)
	s.mu.Lock()
	expected := s.expectInvalid
	if expected {
		s.invalid = append(s.invalid, err)
	}
	s.mu.Unlock()
	if !expected {
		s.t.Errorf("githubtest: %v", err)
	}
}

// reply is a handler's answer before it is validated and sent.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func jsonReply(status int, v any) reply {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json; charset=utf-8")
	return reply{status: status, header: h, body: b}
}

func errorReply(status int, msg string) reply {
	return jsonReply(status, map[string]any{"message": msg, "documentation_url": "https://docs.github.com/rest", "status": strconv.Itoa(status)})
}

// generic are statuses GitHub may answer to any request, whether or not
// the description lists them for the operation; an answer is validated
// when the operation lists its status, or when it is not one of these.
func generic(status int) bool {
	switch status {
	case http.StatusNotModified, http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound,
		http.StatusUnprocessableEntity, http.StatusTooManyRequests:
		return true
	}
	return status >= 500
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/api/v3")
	body, err := io.ReadAll(r.Body)
	if err != nil {
		s.t.Errorf("githubtest: read request: %v", err)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	call := Call{Method: r.Method, Path: path, Query: r.URL.RawQuery}
	rt, params, ok := route(s.doc, r.Method, path)
	var rep reply
	switch {
	case !ok:
		s.refuse("%s %s: no such operation in the description", r.Method, path)
		rep = errorReply(http.StatusNotFound, "Not Found")
	default:
		call.Endpoint = rt.Path
		in := &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: rt,
			Options: &openapi3filter.Options{RejectWhenRequestBodyNotSpecified: true, SkipSettingDefaults: true, MultiError: true,
				AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
		verr := openapi3filter.ValidateRequest(context.Background(), in)
		if verr != nil {
			s.refuse("%s %s: request does not conform to GitHub's description: %v", r.Method, path, verr)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		rep = s.answer(r, &call, rt.Path, params, body, verr != nil)
		if rt.Operation.Responses.Status(rep.status) != nil || !generic(rep.status) {
			s.validateResponse(in, rep)
		}
	}
	call.Status = rep.status
	s.mu.Lock()
	s.calls = append(s.calls, call)
	s.mu.Unlock()
	for k, v := range rep.header {
		w.Header()[k] = v
	}
	w.WriteHeader(rep.status)
	_, _ = w.Write(rep.body)
}

func (s *Server) validateResponse(in *openapi3filter.RequestValidationInput, rep reply) {
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: rep.status, Header: rep.header,
		Body: io.NopCloser(bytes.NewReader(rep.body)), Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		s.t.Errorf("githubtest: the fake's own answer to %s %s does not conform: %v", in.Request.Method, in.Request.URL.Path, err)
	}
}

// answer runs the rate limit, faults, authentication, the handler and
// conditional requests, in GitHub's order.
func (s *Server) answer(r *http.Request, call *Call, endpoint string, params map[string]string, body []byte, invalid bool) reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock()
	if now.Before(s.blockedUntil) {
		s.mu.Unlock()
		s.refuse("%s %s sent at %s while rate limited until %s: hammering", r.Method, call.Path, now.Format(time.RFC3339Nano), s.blockedUntil.Format(time.RFC3339Nano))
		s.mu.Lock()
	}
	if !now.Before(s.windowReset) {
		s.remaining, s.windowReset = RateLimit, now.Add(time.Hour)
	}
	var rep reply
	if len(s.faults) > 0 {
		f := s.faults[0]
		s.faults = s.faults[1:]
		if f.EchoAuthorization {
			f.Message += " (" + r.Header.Get("Authorization") + ")"
		}
		rep = s.fault(f, now)
	} else {
		who, ok := s.authenticate(r, endpoint, now)
		call.Identity = who.login
		switch {
		case !ok:
			rep = errorReply(http.StatusUnauthorized, "Bad credentials")
		case invalid:
			rep = errorReply(http.StatusUnprocessableEntity, "Validation Failed")
		default:
			rep = s.handle(r, who, endpoint, params, body, now)
		}
		rep = s.conditional(r, rep)
	}
	if rep.status != http.StatusNotModified && s.remaining > 0 {
		s.remaining--
	}
	remaining, reset := s.remaining, s.windowReset
	if rep.header.Get("X-RateLimit-Remaining") == "0" {
		remaining = 0
		reset, _ = parseUnix(rep.header.Get("X-RateLimit-Reset"))
	}
	rep.header.Set("X-RateLimit-Limit", strconv.Itoa(RateLimit))
	rep.header.Set("X-RateLimit-Remaining", strconv.Itoa(remaining))
	rep.header.Set("X-RateLimit-Used", strconv.Itoa(RateLimit-remaining))
	rep.header.Set("X-RateLimit-Reset", strconv.FormatInt(reset.Unix(), 10))
	rep.header.Set("X-RateLimit-Resource", "core")
	return rep
}

func (s *Server) fault(f Fault, now time.Time) reply {
	rep := errorReply(f.Status, f.Message)
	if f.RetryAfter > 0 {
		rep.header.Set("Retry-After", strconv.Itoa(f.RetryAfter))
		s.blockedUntil = now.Add(time.Duration(f.RetryAfter) * time.Second)
	}
	if !f.Reset.IsZero() {
		rep.header.Set("X-RateLimit-Remaining", "0")
		rep.header.Set("X-RateLimit-Reset", strconv.FormatInt(f.Reset.Unix(), 10))
		s.blockedUntil = time.Unix(f.Reset.Unix(), 0)
	}
	return rep
}

func parseUnix(s string) (time.Time, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	return time.Unix(n, 0), err
}

// conditional turns an unchanged GET into a 304 and sets the ETag.
func (s *Server) conditional(r *http.Request, rep reply) reply {
	if r.Method != http.MethodGet || rep.status != http.StatusOK {
		return rep
	}
	sum := sha256.Sum256(rep.body)
	etag := `W/"` + hex.EncodeToString(sum[:16]) + `"`
	rep.header.Set("ETag", etag)
	if inm := r.Header.Get("If-None-Match"); inm != "" && inm == etag {
		h := http.Header{}
		h.Set("ETag", etag)
		return reply{status: http.StatusNotModified, header: h}
	}
	return rep
}
