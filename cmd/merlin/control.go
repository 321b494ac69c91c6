package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"merlin.dev/merlin/serving"
)

// defaultAddr is where `merlin up` serves its API; `merlin run` serves it
// on server.listen (127.0.0.1:9292 by default): pass --addr or MERLIN_ADDR.
func defaultAddr() string {
	if a := os.Getenv("MERLIN_ADDR"); a != "" {
		return a
	}
	return "http://127.0.0.1:8080"
}

// tokenEnv holds the bearer token rollout commands send (the daemon's
// server.tokenEnv names the variable it reads the same token from).
const tokenEnv = "MERLIN_API_TOKEN"

func apiURL(addr string) string {
	if !strings.HasPrefix(addr, "http://") && !strings.HasPrefix(addr, "https://") {
		addr = "http://" + addr
	}
	return strings.TrimSuffix(addr, "/")
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	addr := fs.String("addr", defaultAddr(), "daemon API address (env MERLIN_ADDR)")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	path := "/api/v1/models"
	if fs.NArg() > 0 {
		path += "/" + fs.Arg(0)
	}
	body, code, err := call(ctx, http.MethodGet, apiURL(*addr)+path)
	if err != nil {
		fmt.Fprintf(stderr, "merlin status: %v\n", err)
		return exitFailure
	}
	if code != http.StatusOK || *asJSON {
		fmt.Fprint(stdout, string(body))
		return boolExit(code == http.StatusOK)
	}
	var models []serving.ModelStatus
	if fs.NArg() > 0 {
		var m serving.ModelStatus
		err = json.Unmarshal(body, &m)
		models = []serving.ModelStatus{m}
	} else {
		var list struct{ Models []serving.ModelStatus }
		err = json.Unmarshal(body, &list)
		models = list.Models
	}
	if err != nil {
		fmt.Fprintf(stderr, "merlin status: unreadable answer: %v\n", err)
		return exitFailure
	}
	printStatus(stdout, models)
	return exitOK
}

func printStatus(w io.Writer, models []serving.ModelStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tPHASE\tVERSION\tROLE\tWEIGHT\tSTATE\tANALYSIS")
	for _, m := range models {
		phase := string(m.Phase)
		if m.Steps > 0 {
			phase += fmt.Sprintf(" %d/%d", m.Step, m.Steps)
		}
		analysis := ""
		if m.Analysis != nil {
			analysis = string(m.Analysis.Verdict) + ": " + m.Analysis.Summary
		}
		if len(m.Versions) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t%s\n", m.Name, phase, analysis)
		}
		for i, v := range m.Versions {
			name, ph, an := m.Name, phase, analysis
			if i > 0 {
				name, ph, an = "", "", ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d%%\t%s\t%s\n", name, ph, v.Version, v.Role, v.Weight, v.State, an)
		}
	}
	tw.Flush()
	for _, m := range models {
		if m.LastError != "" {
			fmt.Fprintf(w, "\n%s: %s\n", m.Name, m.LastError)
		}
	}
}

// runCommand returns the runner of a rollout command (promote, rollback,
// pause, resume).
func runCommand(action string) func(context.Context, []string, io.Writer, io.Writer) int {
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		fs := flag.NewFlagSet(action, flag.ContinueOnError)
		addr := fs.String("addr", defaultAddr(), "daemon API address (env MERLIN_ADDR)")
		if code, ok := parseFlags(fs, args, stderr); !ok {
			return code
		}
		if fs.NArg() != 1 {
			fmt.Fprintf(stderr, "Usage: merlin %s MODEL\n", action)
			return exitUsage
		}
		body, code, err := call(ctx, http.MethodPost, apiURL(*addr)+"/api/v1/models/"+fs.Arg(0)+"/"+action)
		if err != nil {
			fmt.Fprintf(stderr, "merlin %s: %v\n", action, err)
			return exitFailure
		}
		var res struct {
			Error  string
			Phase  string
			Events []struct{ Kind, Version, Reason string }
		}
		if json.Unmarshal(body, &res) != nil {
			fmt.Fprint(stdout, string(body))
			return boolExit(code == http.StatusOK)
		}
		if res.Error != "" {
			fmt.Fprintf(stderr, "merlin %s: %s\n", action, res.Error)
			return exitFailure
		}
		for _, e := range res.Events {
			fmt.Fprintf(stdout, "%s %s: %s\n", e.Kind, e.Version, e.Reason)
		}
		fmt.Fprintf(stdout, "%s is now %s\n", fs.Arg(0), res.Phase)
		return boolExit(code == http.StatusOK)
	}
}

func call(ctx context.Context, method, url string) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 40*time.Second)
	defer cancel()
	var payload io.Reader
	if method == http.MethodPost {
		payload = strings.NewReader("{}")
	}
	req, err := http.NewRequestWithContext(ctx, method, url, payload)
	if err != nil {
		return nil, 0, err
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	token := os.Getenv(tokenEnv)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("is the daemon running? %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode == http.StatusUnauthorized {
		return body, resp.StatusCode, unauthorized(token, body)
	}
	return body, resp.StatusCode, err
}

// unauthorized explains a 401: which token is missing or refused.
func unauthorized(token string, body []byte) error {
	var e struct{ Error string }
	_ = json.Unmarshal(body, &e)
	if token == "" {
		return fmt.Errorf("the daemon requires an API token: set %s to its server.tokenEnv token (%s)", tokenEnv, e.Error)
	}
	return fmt.Errorf("the daemon refused the API token in %s (%s)", tokenEnv, e.Error)
}

func boolExit(ok bool) int {
	if ok {
		return exitOK
	}
	return exitFailure
}
