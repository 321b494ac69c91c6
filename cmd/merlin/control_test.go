package main

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"merlin.dev/merlin/reconciler"
	"merlin.dev/merlin/rollout"
	"merlin.dev/merlin/server"
	"merlin.dev/merlin/serving"
)

// oneModel is a repository with the model iris; it records commands.
type oneModel struct{ commands []string }

func (r *oneModel) Repo() string { return "models" }
func (r *oneModel) Status() reconciler.Status {
	return reconciler.Status{Repo: "models", Models: []serving.ModelStatus{{Name: "iris", Phase: rollout.Progressing}}}
}
func (r *oneModel) Command(_ context.Context, model string, cmd rollout.Command) (reconciler.CommandResult, error) {
	r.commands = append(r.commands, model+" "+string(cmd))
	return reconciler.CommandResult{Model: model, Phase: rollout.AwaitingPromotion}, nil
}

// TestCommandsSendTheToken runs the CLI against the real API server
// requiring a token: MERLIN_API_TOKEN set, the command goes through (as a
// JSON call, which the server insists on); unset or wrong, it fails
// saying what to set, and nothing is executed.
func TestCommandsSendTheToken(t *testing.T) {
	repo := &oneModel{}
	srv := httptest.NewServer(server.New(server.Options{Repos: []server.Repo{repo}, Token: "tok-123"}))
	defer srv.Close()

	t.Setenv(tokenEnv, "")
	code, _, stderr := merlin(t, "pause", "--addr", srv.URL, "iris")
	if code != exitFailure || !strings.Contains(stderr, "requires an API token: set MERLIN_API_TOKEN") {
		t.Errorf("without a token: exit %d, stderr %q", code, stderr)
	}
	t.Setenv(tokenEnv, "tok-124")
	code, _, stderr = merlin(t, "resume", "--addr", srv.URL, "iris")
	if code != exitFailure || !strings.Contains(stderr, "refused the API token in MERLIN_API_TOKEN") {
		t.Errorf("with a wrong token: exit %d, stderr %q", code, stderr)
	}
	if len(repo.commands) != 0 {
		t.Fatalf("commands executed without the token: %v", repo.commands)
	}

	t.Setenv(tokenEnv, "tok-123")
	code, stdout, stderr := merlin(t, "pause", "--addr", srv.URL, "iris")
	if code != exitOK || !strings.Contains(stdout, "iris is now AwaitingPromotion") {
		t.Errorf("with the token: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if len(repo.commands) != 1 || repo.commands[0] != "iris pause" {
		t.Errorf("commands: %v, want iris pause", repo.commands)
	}
	// Reads need no token.
	t.Setenv(tokenEnv, "")
	if code, stdout, stderr := merlin(t, "status", "--addr", srv.URL); code != exitOK || !strings.Contains(stdout, "iris") {
		t.Errorf("status without a token: exit %d, %q %q", code, stdout, stderr)
	}
}

// TestCommandsOnLoopbackWithoutToken: a loopback daemon without a token
// takes the CLI's commands as before.
func TestCommandsOnLoopbackWithoutToken(t *testing.T) {
	repo := &oneModel{}
	srv := httptest.NewServer(server.New(server.Options{Repos: []server.Repo{repo}, AllowedHosts: []string{"127.0.0.1"}}))
	defer srv.Close()
	t.Setenv(tokenEnv, "")
	for _, addr := range []string{srv.URL, strings.TrimPrefix(srv.URL, "http://"), strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)} {
		if code, stdout, stderr := merlin(t, "promote", "--addr", addr, "iris"); code != exitOK || !strings.Contains(stdout, "iris is now AwaitingPromotion") {
			t.Errorf("--addr %s: exit %d, %q %q", addr, code, stdout, stderr)
		}
	}
	if len(repo.commands) != 3 {
		t.Errorf("commands: %v, want three", repo.commands)
	}
}
