package gitsource

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"merlin.dev/merlin/internal/gittest"
)

// The git servers themselves (git daemon, smart HTTP) are in package
// gittest; ssh is only needed here.

// sshServer is a real sshd serving git-upload-pack with key auth.
type sshServer struct {
	url        string // ssh://root@127.0.0.1:port/abs/repo.git
	keyFile    string // client private key
	knownHosts string // known_hosts with the server's host key
	port       int
}

// startSSHD runs /usr/sbin/sshd -D as root with generated host and client
// keys, or skips loudly when that is impossible here.
func startSSHD(t testing.TB, r *gittest.Repo) *sshServer {
	t.Helper()
	const sshd = "/usr/sbin/sshd"
	if os.Geteuid() != 0 {
		t.Skip("SKIPPING ssh transport test: sshd must run as root for key login (not root here)")
	}
	if _, err := os.Stat(sshd); err != nil {
		t.Skip("SKIPPING ssh transport test: " + sshd + " missing (apt-get install openssh-server)")
	}
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("SKIPPING ssh transport test: ssh-keygen missing (apt-get install openssh-client)")
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Skip("SKIPPING ssh transport test: cannot create /run/sshd: " + err.Error())
	}
	dir := t.TempDir()
	keygen := func(name string) {
		out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, name)).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	keygen("host")
	keygen("client")
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	port := gittest.FreePort(t)
	s := &sshServer{
		port:       port,
		keyFile:    filepath.Join(dir, "client"),
		knownHosts: filepath.Join(dir, "known_hosts"),
		url:        fmt.Sprintf("ssh://root@127.0.0.1:%d%s", port, r.Bare),
	}
	writeFile(t, filepath.Join(dir, "authorized_keys"), read("client.pub")+"\n")
	writeFile(t, s.knownHosts, fmt.Sprintf("[127.0.0.1]:%d %s\n", port, read("host.pub")))
	// sshd runs commands through the user's shell, and bash started by sshd
	// reads ~/.bashrc: point HOME at an empty dir so a heavy root profile
	// (pyenv & co) does not add seconds to every connection.
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "sshd_config")
	writeFile(t, conf, strings.Join([]string{
		"ListenAddress 127.0.0.1",
		"HostKey " + filepath.Join(dir, "host"),
		"PidFile " + filepath.Join(dir, "sshd.pid"),
		"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
		"StrictModes no", "UsePAM no", "PasswordAuthentication no",
		"KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
		"PermitRootLogin prohibit-password", "LogLevel ERROR", "SetEnv HOME=" + home, "",
	}, "\n"))
	p := gittest.NewServer(t, sshd, []string{"-D", "-e", "-f", conf, "-p", strconv.Itoa(port)}, r.Env, port)
	p.Start()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("sshd log:\n%s", p.Log())
		}
	})
	return s
}

func writeFile(t testing.TB, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// stallServer accepts TCP connections and never answers, like a remote that
// hangs mid-handshake. It returns host:port.
func stallServer(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().String()
}
