package daemon

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// unitKeys reads the Key=Value lines of a systemd unit file (every value
// of a key, in order).
func unitKeys(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			keys[k] = append(keys[k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestShippedUnits checks deploy/systemd against the daemon: the example
// configuration loads, the daemon takes each of merlin.socket's sockets
// for one of its addresses (as it would when systemd passes them, named
// after the unit), the service runs that configuration with the state
// directory systemd creates, restarts always and leaves model servers to
// the next daemon when one dies. systemd-analyze verifies both units.
func TestShippedUnits(t *testing.T) {
	dir := filepath.Join("..", "deploy", "systemd")
	cfg, err := LoadConfig(filepath.Join(dir, "merlin.config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	sock := unitKeys(t, filepath.Join(dir, "merlin.socket"))
	var socks []socket
	for _, addr := range sock["ListenStream"] {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatalf("ListenStream=%s: %v", addr, err)
		}
		socks = append(socks, socket{name: "merlin.socket", addr: a})
	}
	roles := (&Daemon{cfg: cfg}).listenRoles()
	use, err := assignSockets(roles, socks)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range roles {
		if use[i] < 0 {
			t.Errorf("merlin.socket has no socket for %s (%s)", r.addr, r.names[0])
		}
	}
	if got := sock["Accept"]; len(got) != 1 || got[0] != "no" {
		t.Errorf("merlin.socket Accept=%v; want no", got)
	}

	svc := unitKeys(t, filepath.Join(dir, "merlin.service"))
	want := map[string]string{
		"ExecStart": "/usr/local/bin/merlin run --config /etc/merlin/merlin.config.yaml",
		"Restart":   "always", "KillMode": "process", "OOMPolicy": "continue",
		"Requires": "merlin.socket", "StateDirectory": "merlin", "User": "merlin",
	}
	for k, v := range want {
		if got := svc[k]; len(got) != 1 || got[0] != v {
			t.Errorf("merlin.service %s=%v; want %s", k, got, v)
		}
	}
	if cfg.Local.StateDir != "/var/lib/"+svc["StateDirectory"][0] {
		t.Errorf("local.stateDir %s is not the service's StateDirectory", cfg.Local.StateDir)
	}

	t.Run("systemd-analyze verify", func(t *testing.T) {
		analyze, err := exec.LookPath("systemd-analyze")
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("CI=true but systemd-analyze is missing (hack/test-deps.sh installs systemd)")
			}
			t.Skip("SKIPPING: systemd-analyze not found (apt-get install systemd)")
		}
		tmp := t.TempDir()
		for _, name := range []string{"merlin.socket", "merlin.service"} {
			data, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			// verify wants ExecStart to exist: any executable will do.
			data = []byte(strings.ReplaceAll(string(data), "/usr/local/bin/merlin", "/bin/true"))
			if err := os.WriteFile(filepath.Join(tmp, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		out, err := exec.Command(analyze, "verify", filepath.Join(tmp, "merlin.socket"), filepath.Join(tmp, "merlin.service")).CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})
}
