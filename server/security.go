package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// contentSecurityPolicy lets the status page use its inline <style> and
// nothing else: no scripts, no external loads, no framing, no forms.
const contentSecurityPolicy = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// secure sets the security headers on every answer, refuses requests for
// an unexpected Host (DNS rebinding), and guards every method but GET and
// HEAD: see guard.
func (s *Server) secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		if !s.hostAllowed(r.Host) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "unexpected Host " + r.Host + ": add it to server.allowedHosts"})
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !s.isHook(r) {
			if code, msg := s.guard(r); code != 0 {
				if code == http.StatusUnauthorized {
					hd.Set("WWW-Authenticate", `Bearer realm="merlin"`)
				}
				writeJSON(w, code, map[string]string{"error": msg})
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// isHook reports whether r is a webhook delivery, which its handler
// authenticates by signature: GitHub sends no bearer token, and nothing a
// browser page sends carries a valid signature.
func (s *Server) isHook(r *http.Request) bool {
	return s.opts.Hooks != nil && r.Method == http.MethodPost && r.URL.Path == HooksPath
}

// guard checks a request that would act (a rollout command). A browser
// page of another site cannot pass it: a cross-site request carries an
// Origin that is not ours, and without CORS a page can send neither an
// Authorization header nor Content-Type application/json (forms and
// text/plain are what it can send). It returns 0 when the request may go on.
func (s *Server) guard(r *http.Request) (int, string) {
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
			return http.StatusForbidden, "cross-origin request from " + o + " refused"
		}
	}
	if s.opts.Token != "" {
		auth := r.Header.Get("Authorization")
		scheme, got, _ := strings.Cut(auth, " ")
		if !strings.EqualFold(scheme, "Bearer") || got == "" {
			return http.StatusUnauthorized, "this call needs Authorization: Bearer <token> (the CLI sends $MERLIN_API_TOKEN)"
		}
		// Hashes have one length, so the comparison time says nothing
		// about the token's length either.
		a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(s.opts.Token))
		if subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
			return http.StatusUnauthorized, "invalid bearer token"
		}
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return http.StatusUnsupportedMediaType, "this call needs Content-Type: application/json"
	}
	return 0, ""
}

// hostAllowed reports whether a request's Host names this server: with
// AllowedHosts set (a loopback listener), a loopback name or address or
// one of AllowedHosts; otherwise any.
func (s *Server) hostAllowed(host string) bool {
	if len(s.opts.AllowedHosts) == 0 {
		return true
	}
	name := hostname(host)
	if IsLoopbackHost(name) {
		return true
	}
	for _, h := range s.opts.AllowedHosts {
		if strings.EqualFold(hostname(h), name) {
			return true
		}
	}
	return false
}

// hostname is host without its port and brackets.
func hostname(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
}

// IsLoopbackHost reports whether a host name or address (without port)
// stays on this machine: localhost, a *.localhost name, 127.0.0.0/8 or ::1.
func IsLoopbackHost(name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return true
	}
	ip := net.ParseIP(name)
	return ip != nil && ip.IsLoopback()
}
