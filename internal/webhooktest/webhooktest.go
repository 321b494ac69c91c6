// Package webhooktest sends GitHub webhook deliveries in tests: real
// payloads from testdata/github-webhooks (see testdata/SOURCES.md), each
// validated against GitHub's official webhook schemas (npm
// @octokit/openapi-webhooks, fetched by hack/test-deps.sh) before it is
// sent, and signed like GitHub signs them.
package webhooktest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"merlin.dev/merlin/webhooks"
)

// SchemaVersion is the @octokit/openapi-webhooks release hack/test-deps.sh
// fetches.
const SchemaVersion = "12.1.0"

// SchemaFile is where hack/test-deps.sh puts GitHub's webhook description
// (MERLIN_WEBHOOK_SCHEMAS overrides).
func SchemaFile() string {
	if p := os.Getenv("MERLIN_WEBHOOK_SCHEMAS"); p != "" {
		return p
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "merlin", "npm", "openapi-webhooks-"+SchemaVersion, "package", "generated", "api.github.com.json")
}

var (
	loadOnce sync.Once
	doc      *openapi3.T
	loadErr  error
)

// schemas loads the description once per test binary; a missing file skips
// the test locally and fails it in CI (CI=true), where make test fetched it.
func schemas(t testing.TB) *openapi3.T {
	t.Helper()
	loadOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, loadErr = loader.LoadFromFile(SchemaFile())
	})
	if loadErr != nil {
		msg := fmt.Sprintf("GitHub's webhook schemas (%s): %v; run hack/test-deps.sh --no-kube", SchemaFile(), loadErr)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip("SKIPPING: " + msg)
	}
	return doc
}

// Validate fails the test unless body is a valid payload of event (an
// X-GitHub-Event) per GitHub's published schema for its action.
func Validate(t testing.TB, event string, body []byte) {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%s payload: %v", event, err)
	}
	key := strings.ReplaceAll(event, "_", "-")
	if a, ok := v["action"].(string); ok {
		key += "-" + strings.ReplaceAll(a, "_", "-")
	}
	item := schemas(t).Webhooks[key]
	if item == nil || item.Post == nil || item.Post.RequestBody == nil {
		t.Fatalf("GitHub's schemas describe no webhook %q", key)
	}
	mt := item.Post.RequestBody.Value.Content.Get("application/json")
	if mt == nil || mt.Schema == nil {
		t.Fatalf("webhook %q has no JSON schema", key)
	}
	var generic any
	_ = json.Unmarshal(body, &generic)
	if err := mt.Schema.Value.VisitJSON(generic, openapi3.MultiErrors()); err != nil {
		t.Fatalf("%s payload is not what GitHub sends (schema %s): %v", event, key, err)
	}
}

// Payload reads testdata/github-webhooks/NAME from the repository root.
func Payload(t testing.TB, name string) []byte {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	data, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "testdata", "github-webhooks", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// Edit returns payload with fields set (dotted paths, e.g. "ref" or
// "issue.number"); a nil value deletes the field. Tests derive the
// payloads the corpus lacks (an edited comment, a push to main) this way,
// and Validate checks the result like any other.
func Edit(t testing.TB, payload []byte, fields map[string]any) []byte {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(payload, &v); err != nil {
		t.Fatal(err)
	}
	for path, val := range fields {
		m := v
		parts := strings.Split(path, ".")
		for _, p := range parts[:len(parts)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		if val == nil {
			delete(m, parts[len(parts)-1])
		} else {
			m[parts[len(parts)-1]] = val
		}
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Delivery is one webhook request.
type Delivery struct {
	Event string
	Body  []byte
	// ID is X-GitHub-Delivery; a new GUID when empty.
	ID string
	// Signature overrides X-Hub-Signature-256 ("-" sends none); SHA1 adds
	// an X-Hub-Signature header like GitHub's legacy one.
	Signature, SHA1 string
}

// NewID returns a GUID like GitHub's delivery ids.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Request builds the request GitHub would send to url, validating the
// payload first and signing it with secret.
func (d Delivery) Request(t testing.TB, url string, secret []byte) *http.Request {
	t.Helper()
	if d.Event != "" {
		Validate(t, d.Event, d.Body)
	}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, bytes.NewReader(d.Body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/merlin-test")
	req.Header.Set("X-GitHub-Event", d.Event)
	id := d.ID
	if id == "" {
		id = NewID()
	}
	req.Header.Set("X-GitHub-Delivery", id)
	switch d.Signature {
	case "":
		req.Header.Set("X-Hub-Signature-256", webhooks.SignatureHeader(secret, d.Body))
	case "-":
	default:
		req.Header.Set("X-Hub-Signature-256", d.Signature)
	}
	if d.SHA1 != "" {
		req.Header.Set("X-Hub-Signature", d.SHA1)
	}
	return req
}
