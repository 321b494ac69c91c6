package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
)

// Signature errors; none says anything about the secret.
var (
	ErrUnsigned  = errors.New("no X-Hub-Signature-256 header: the webhook needs a secret (SHA-1 signatures are not accepted)")
	ErrMalformed = errors.New("X-Hub-Signature-256 is not sha256=<64 hex digits>")
	ErrMismatch  = errors.New("X-Hub-Signature-256 does not match the body: check the webhook's secret")
)

// Verify checks an X-Hub-Signature-256 header value against body with
// each of secrets and returns the index of the secret that signed it. It
// compares in constant time (hmac.Equal) and never accepts an empty secret,
// unlike go-github's ValidatePayload, which falls back to SHA-1 and accepts
// any body when the secret is empty.
func Verify(header string, body []byte, secrets [][]byte) (int, error) {
	if header == "" {
		return -1, ErrUnsigned
	}
	hexSum, ok := strings.CutPrefix(header, "sha256=")
	if !ok || len(hexSum) != 2*sha256.Size {
		return -1, ErrMalformed
	}
	got, err := hex.DecodeString(hexSum)
	if err != nil {
		return -1, ErrMalformed
	}
	match := -1
	for i, s := range secrets {
		if len(s) == 0 {
			continue
		}
		// Every secret is tried, so the time taken does not say which one
		// matched.
		if hmac.Equal(got, Sign(s, body)) && match < 0 {
			match = i
		}
	}
	if match < 0 {
		return -1, ErrMismatch
	}
	return match, nil
}

// Sign returns the HMAC-SHA256 of body with secret, as GitHub computes it
// for X-Hub-Signature-256 (hex-encoded after "sha256=").
func Sign(secret, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return m.Sum(nil)
}

// SignatureHeader is the X-Hub-Signature-256 value GitHub sends for body.
func SignatureHeader(secret, body []byte) string {
	return "sha256=" + hex.EncodeToString(Sign(secret, body))
}
