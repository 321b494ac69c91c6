package github

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// App authenticates as a GitHub App installation.
type App struct {
	ID             int64
	InstallationID int64
	// PrivateKeyFile holds the app's RSA private key (PEM).
	PrivateKeyFile string
}

// appTokens mints installation tokens and keeps the current one until
// refreshBefore its expiry (GitHub's last an hour).
type appTokens struct {
	app           App
	key           *rsa.PrivateKey
	mintURL       string
	client        *http.Client // no auth layer: the JWT is set here
	now           func() time.Time
	refreshBefore time.Duration
	secrets       *secrets

	mu      sync.Mutex
	token   string
	expires time.Time
}

func newAppTokens(app App, apiURL string, client *http.Client, now func() time.Time, s *secrets) (*appTokens, error) {
	pem, err := os.ReadFile(app.PrivateKeyFile)
	if err != nil {
		return nil, fmt.Errorf("github app private key: %w", err)
	}
	s.add(string(pem))
	key, err := jwt.ParseRSAPrivateKeyFromPEM(pem)
	if err != nil {
		return nil, fmt.Errorf("github app private key %s: %w", app.PrivateKeyFile, err)
	}
	return &appTokens{
		app: app, key: key, client: client, now: now, refreshBefore: 5 * time.Minute, secrets: s,
		mintURL: fmt.Sprintf("%sapp/installations/%d/access_tokens", apiURL, app.InstallationID),
	}, nil
}

// Token returns a valid installation token, minting one when the cached
// one is missing or about to expire.
func (a *appTokens) Token(ctx context.Context) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.token != "" && a.now().Add(a.refreshBefore).Before(a.expires) {
		return a.token, nil
	}
	tok, exp, err := a.mint(ctx)
	if err != nil {
		return "", a.secrets.scrub(fmt.Errorf("mint github app installation token: %w", err))
	}
	a.token, a.expires = tok, exp
	return tok, nil
}

// Invalidate drops token if it is still the current one, so that the next
// Token mints another.
func (a *appTokens) Invalidate(token string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.token == token {
		a.token = ""
	}
}

// appJWT signs the app's identity: issued a minute back against clock
// drift, valid for nine (GitHub allows ten).
func (a *appTokens) appJWT() (string, error) {
	now := a.now()
	claims := jwt.RegisteredClaims{
		Issuer:    strconv.FormatInt(a.app.ID, 10),
		IssuedAt:  jwt.NewNumericDate(now.Add(-time.Minute)),
		ExpiresAt: jwt.NewNumericDate(now.Add(9 * time.Minute)),
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(a.key)
	if err != nil {
		return "", fmt.Errorf("sign app jwt: %w", err)
	}
	a.secrets.add(s)
	return s, nil
}

func (a *appTokens) mint(ctx context.Context) (string, time.Time, error) {
	j, err := a.appJWT()
	if err != nil {
		return "", time.Time{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.mintURL, http.NoBody)
	if err != nil {
		return "", time.Time{}, err
	}
	req.Header.Set("Authorization", "Bearer "+j)
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	resp, err := a.client.Do(req)
	if err != nil {
		return "", time.Time{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", time.Time{}, err
	}
	if resp.StatusCode != http.StatusCreated {
		// The body is GitHub's message; it could quote what we sent.
		var e struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(body, &e)
		return "", time.Time{}, fmt.Errorf("POST %s: %s: %s", req.URL.Path, resp.Status, e.Message)
	}
	var out struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return "", time.Time{}, fmt.Errorf("POST %s: decode: %w", req.URL.Path, err)
	}
	if out.Token == "" {
		return "", time.Time{}, fmt.Errorf("POST %s: no token in the answer", req.URL.Path)
	}
	a.secrets.add(out.Token)
	return out.Token, out.ExpiresAt, nil
}
