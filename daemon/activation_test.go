package daemon

import (
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestParseActivation(t *testing.T) {
	const self = 4242
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []passedFD
		note string // a part of the note
		err  string // a part of the error
	}{
		{name: "not activated", env: map[string]string{}},
		{name: "two named sockets", env: map[string]string{"LISTEN_FDS": "2", "LISTEN_PID": "4242", "LISTEN_FDNAMES": "models:api"},
			want: []passedFD{{3, "models"}, {4, "api"}}},
		{name: "unnamed", env: map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "4242"}, want: []passedFD{{3, ""}}},
		{name: "none", env: map[string]string{"LISTEN_FDS": "0", "LISTEN_PID": "4242"}},
		{name: "for another process", env: map[string]string{"LISTEN_FDS": "2", "LISTEN_PID": "1"}, note: "LISTEN_PID=1 is not this process (4242)"},
		{name: "without a pid", env: map[string]string{"LISTEN_FDS": "2"}, note: "without LISTEN_PID"},
		{name: "bad count", env: map[string]string{"LISTEN_FDS": "two", "LISTEN_PID": "4242"}, err: `LISTEN_FDS="two"`},
		{name: "negative count", env: map[string]string{"LISTEN_FDS": "-1", "LISTEN_PID": "4242"}, err: `LISTEN_FDS="-1"`},
		{name: "bad pid", env: map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "me"}, err: `LISTEN_PID="me"`},
		{name: "names and count disagree", env: map[string]string{"LISTEN_FDS": "2", "LISTEN_PID": "4242", "LISTEN_FDNAMES": "models"}, err: "names 1 sockets, LISTEN_FDS=2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, note, err := parseActivation(func(k string) string { return tc.env[k] }, self)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v; want one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("descriptors %v; want %v", got, tc.want)
			}
			if tc.note == "" && note != "" || !strings.Contains(note, tc.note) {
				t.Errorf("note %q; want %q", note, tc.note)
			}
		})
	}
}

func TestAssignSockets(t *testing.T) {
	tcp := func(s string) *net.TCPAddr {
		a, err := net.ResolveTCPAddr("tcp", s)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	apart := []listenRole{{names: []string{"models"}, addr: "127.0.0.1:8080"}, {names: []string{"api"}, addr: "127.0.0.1:9292"}}
	for _, tc := range []struct {
		name  string
		roles []listenRole
		socks []socket
		want  []int
		err   string
	}{
		{name: "nothing passed", roles: apart, want: []int{-1, -1}},
		{name: "by name", roles: apart, socks: []socket{{"api", tcp("127.0.0.1:9292")}, {"models", tcp("127.0.0.1:8080")}}, want: []int{1, 0}},
		{name: "by address (the socket unit's default name)", roles: apart,
			socks: []socket{{"merlin.socket", tcp("127.0.0.1:9292")}, {"merlin.socket", tcp("127.0.0.1:8080")}}, want: []int{1, 0}},
		{name: "only the models", roles: apart, socks: []socket{{"", tcp("127.0.0.1:8080")}}, want: []int{0, -1}},
		{name: "named, on another address", roles: apart, socks: []socket{{"api", tcp("0.0.0.0:9292")}},
			err: `the socket named "api" is bound to 0.0.0.0:9292, but the configuration says 127.0.0.1:9292`},
		{name: "named, on another port", roles: apart, socks: []socket{{"models", tcp("127.0.0.1:8081")}}, err: "bound to 127.0.0.1:8081"},
		{name: "two of one name", roles: apart, socks: []socket{{"models", tcp("127.0.0.1:8080")}, {"models", tcp("127.0.0.1:8080")}}, err: `two sockets (named "models" and "models") for 127.0.0.1:8080`},
		{name: "combined, both names", roles: []listenRole{{names: []string{"models", "api"}, addr: "127.0.0.1:8080"}},
			socks: []socket{{"models", tcp("127.0.0.1:8080")}, {"api", tcp("127.0.0.1:8080")}}, err: `two sockets (named "models" and "api") for 127.0.0.1:8080`},
		{name: "a socket nobody serves", roles: apart, socks: []socket{{"models", tcp("127.0.0.1:8080")}, {"metrics", tcp("127.0.0.1:7000")}},
			err: `socket 4 (name "metrics", 127.0.0.1:7000) matches none of the daemon's addresses`},
		{name: "any address, dual stack", roles: []listenRole{{names: []string{"models", "api"}, addr: ":8080"}}, socks: []socket{{"", tcp("[::]:8080")}}, want: []int{0}},
		{name: "0.0.0.0 and [::] are both any", roles: []listenRole{{names: []string{"models"}, addr: "0.0.0.0:8080"}}, socks: []socket{{"models", tcp("[::]:8080")}}, want: []int{0}},
		{name: "localhost is loopback", roles: []listenRole{{names: []string{"models", "api"}, addr: "localhost:8080"}}, socks: []socket{{"", tcp("[::1]:8080")}}, want: []int{0}},
		{name: "combined takes either name", roles: []listenRole{{names: []string{"models", "api"}, addr: "127.0.0.1:8080"}}, socks: []socket{{"api", tcp("127.0.0.1:8080")}}, want: []int{0}},
		{name: "a host name agrees with a named socket only", roles: []listenRole{{names: []string{"api"}, addr: "merlin.internal:9292"}},
			socks: []socket{{"", tcp("10.0.0.1:9292")}}, err: "matches none"},
		{name: "a host name, named", roles: []listenRole{{names: []string{"api"}, addr: "merlin.internal:9292"}}, socks: []socket{{"api", tcp("10.0.0.1:9292")}}, want: []int{0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := assignSockets(tc.roles, tc.socks)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v; want one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("assigned %v; want %v", got, tc.want)
			}
		})
	}
}

// rawFD is a descriptor of the socket of c that no *os.File owns, as a
// supervisor passes it.
func rawFD(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	if err := rc.Control(func(s uintptr) { fd, err = syscall.Dup(int(s)) }); err != nil || fd < 0 {
		t.Fatalf("dup: %v", err)
	}
	return fd
}

// TestListenerOf takes a passed listening socket: the listener accepts on
// it, its descriptor is close-on-exec (a model server never inherits the
// daemon's port) and the passed descriptor is closed. A connected socket
// (Accept=yes) and a pipe are refused.
func TestListenerOf(t *testing.T) {
	orig, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	fd := rawFD(t, orig.(*net.TCPListener))
	ln, err := listenerOf(passedFD{fd: fd, name: "models"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ln.Addr().String() != orig.Addr().String() {
		t.Errorf("listener on %s; want %s", ln.Addr(), orig.Addr())
	}
	rc, _ := ln.SyscallConn()
	var flags uintptr
	var ferr error
	_ = rc.Control(func(s uintptr) { flags, ferr = fdFlags(s) })
	if ferr != nil || flags&syscall.FD_CLOEXEC == 0 {
		t.Errorf("the listener's descriptor is not close-on-exec: flags %#x, %v", flags, ferr)
	}
	// The passed descriptor is closed: its number is free, or reused for
	// another file than the socket.
	var want, got syscall.Stat_t
	if err := syscall.Fstat(fd, &got); err == nil {
		_ = rc.Control(func(s uintptr) { err = syscall.Fstat(int(s), &want) })
		if err == nil && got.Ino == want.Ino {
			t.Errorf("the passed descriptor %d still holds the socket", fd)
		}
	}
	go func() {
		if c, err := net.Dial("tcp", orig.Addr().String()); err == nil {
			c.Close()
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept on the passed socket: %v", err)
	}
	c.Close()

	conn, err := net.Dial("tcp", orig.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cfd := rawFD(t, conn.(*net.TCPConn))
	if _, err := listenerOf(passedFD{fd: cfd, name: "models"}); err == nil || !strings.Contains(err.Error(), "not a listening socket") {
		t.Errorf("a connection passed as a listener: %v", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	pfd, err := syscall.Dup(int(r.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := listenerOf(passedFD{fd: pfd, name: "api"}); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("a pipe passed as a listener: %v", err)
	}
}

// fdFlags are a descriptor's flags (F_GETFD).
func fdFlags(fd uintptr) (uintptr, error) {
	flags, _, errno := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFD, 0)
	if errno != 0 {
		return 0, errno
	}
	return flags, nil
}
