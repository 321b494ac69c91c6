package daemon

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Socket activation: a supervisor (systemd with merlin.socket, or anything
// speaking its protocol) opens the listening sockets once and passes them
// to every daemon it starts. While a killed daemon restarts, the sockets
// stay open in the supervisor, so connections wait in the kernel's accept
// queue and are answered by the next daemon instead of being refused.
//
// The protocol is systemd's (sd_listen_fds(3)): LISTEN_FDS sockets start
// at descriptor 3, LISTEN_PID names the process they are for, and
// LISTEN_FDNAMES (colon-separated, from FileDescriptorName=) names them.
// Like sd_listen_fds, sockets are taken only when LISTEN_PID is this
// process: a supervisor that cannot set it after fork execs the daemon
// through `sh -c 'LISTEN_PID=$$ exec merlin ...'`, as the tests do.

// The variables of the protocol, and the first descriptor passed.
const (
	envListenPID     = "LISTEN_PID"
	envListenFDs     = "LISTEN_FDS"
	envListenFDNames = "LISTEN_FDNAMES"
	listenFDsStart   = 3
)

// Socket names a supervisor gives (FileDescriptorName= in merlin.socket).
const (
	SocketModels = "models"
	SocketAPI    = "api"
)

// passedFD is a descriptor the supervisor passed, with its name ("" when
// the supervisor named none).
type passedFD struct {
	fd   int
	name string
}

// parseActivation reads the protocol's variables (env) for process self:
// the descriptors passed, or none when the variables are absent or meant
// for another process (note then says why they were ignored).
func parseActivation(env func(string) string, self int) (fds []passedFD, note string, err error) {
	count, pid, names := env(envListenFDs), env(envListenPID), env(envListenFDNames)
	if count == "" {
		return nil, "", nil
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 0 {
		return nil, "", fmt.Errorf("socket activation: %s=%q is not a number of descriptors", envListenFDs, count)
	}
	if pid == "" {
		return nil, fmt.Sprintf("socket activation: %s=%s without %s: the sockets are not known to be for this process; ignored", envListenFDs, count, envListenPID), nil
	}
	if p, err := strconv.Atoi(pid); err != nil {
		return nil, "", fmt.Errorf("socket activation: %s=%q is not a pid", envListenPID, pid)
	} else if p != self {
		return nil, fmt.Sprintf("socket activation: %s=%d is not this process (%d); ignored", envListenPID, p, self), nil
	}
	var split []string
	if names != "" {
		if split = strings.Split(names, ":"); len(split) != n {
			return nil, "", fmt.Errorf("socket activation: %s=%q names %d sockets, %s=%d", envListenFDNames, names, len(split), envListenFDs, n)
		}
	}
	for i := range n {
		fd := passedFD{fd: listenFDsStart + i}
		if split != nil {
			fd.name = split[i]
		}
		fds = append(fds, fd)
	}
	return fds, "", nil
}

// listenRole is an address the daemon serves, and the socket names that
// may serve it.
type listenRole struct {
	names []string
	addr  string // as configured
}

// socket is a passed socket as assignSockets sees it.
type socket struct {
	name string
	addr *net.TCPAddr
}

// assignSockets decides which passed socket serves which role: the one
// named after the role, else the one bound to the role's address. The
// address must agree with the configured one either way, so that the
// configuration stays true (the API's loopback check relies on it). It
// returns, per role, the index of its socket or -1 (the daemon binds the
// address itself). A passed socket no role takes is an error: it would be
// a port nobody answers.
func assignSockets(roles []listenRole, socks []socket) ([]int, error) {
	out := make([]int, len(roles))
	taken := make([]bool, len(socks))
	for i, r := range roles {
		out[i] = -1
		for j, s := range socks { // by name first
			if !taken[j] && s.name != "" && slices.Contains(r.names, s.name) {
				if !sameAddr(r.addr, s.addr, true) {
					return nil, fmt.Errorf("socket activation: the socket named %q is bound to %s, but the configuration says %s: make them agree", s.name, s.addr, r.addr)
				}
				if out[i] >= 0 {
					return nil, fmt.Errorf("socket activation: two sockets (named %q and %q) for %s", socks[out[i]].name, s.name, r.addr)
				}
				out[i], taken[j] = j, true
			}
		}
	}
	for i, r := range roles {
		for j, s := range socks { // then by address
			if out[i] < 0 && !taken[j] && sameAddr(r.addr, s.addr, false) {
				out[i], taken[j] = j, true
			}
		}
	}
	for j, s := range socks {
		if !taken[j] {
			var want []string
			for _, r := range roles {
				want = append(want, fmt.Sprintf("%s (%s)", r.addr, strings.Join(r.names, " or ")))
			}
			return nil, fmt.Errorf("socket activation: socket %d (name %q, %s) matches none of the daemon's addresses %s: name it (FileDescriptorName=) or bind it to the configured address",
				listenFDsStart+j, s.name, s.addr, strings.Join(want, ", "))
		}
	}
	return out, nil
}

// sameAddr reports whether a socket bound to got serves the configured
// address: the same port, and the same IP, or both unspecified (":8080",
// "0.0.0.0", "[::]"), or loopback for "localhost". A host name cannot be
// checked without resolving it: it agrees only with a named socket
// (named), never picks one by address.
func sameAddr(configured string, got *net.TCPAddr, named bool) bool {
	host, port, err := net.SplitHostPort(configured)
	if err != nil || got == nil || port != strconv.Itoa(got.Port) {
		return false
	}
	switch ip := net.ParseIP(host); {
	case host == "" || ip != nil && ip.IsUnspecified():
		return got.IP.IsUnspecified()
	case host == "localhost":
		return got.IP.IsLoopback()
	case ip != nil:
		return ip.Equal(got.IP)
	default:
		return named
	}
}

// activated is a socket passed by the supervisor, as a listener.
type activated struct {
	name string
	ln   *net.TCPListener
}

// takeActivated takes the sockets the supervisor passed to this process,
// and removes the protocol's variables from the environment either way,
// so that children (model servers) do not take them for theirs. Each
// socket is duplicated close-on-exec and its inherited descriptor closed:
// a model server started later never holds the daemon's ports.
func takeActivated() ([]activated, string, error) {
	fds, note, err := parseActivation(os.Getenv, os.Getpid())
	for _, k := range []string{envListenPID, envListenFDs, envListenFDNames} {
		_ = os.Unsetenv(k)
	}
	if err != nil {
		return nil, note, err
	}
	var out []activated
	for _, p := range fds {
		ln, err := listenerOf(p)
		if err != nil {
			for _, a := range out {
				a.ln.Close()
			}
			return nil, note, err
		}
		out = append(out, activated{name: p.name, ln: ln})
	}
	return out, note, nil
}

// listenerOf turns a passed descriptor into a listener; the descriptor
// itself is closed.
func listenerOf(p passedFD) (*net.TCPListener, error) {
	f := os.NewFile(uintptr(p.fd), "listen-fd-"+strconv.Itoa(p.fd))
	defer f.Close()
	// A socket passed with Accept=yes is a connection, not a listener.
	v, err := syscall.GetsockoptInt(p.fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
	if err != nil {
		return nil, fmt.Errorf("socket activation: descriptor %d (%q) is not a socket: %w", p.fd, p.name, err)
	}
	if v == 0 {
		return nil, fmt.Errorf("socket activation: descriptor %d (%q) is not a listening socket (merlin.socket needs Accept=no)", p.fd, p.name)
	}
	ln, err := net.FileListener(f) // a close-on-exec duplicate
	if err != nil {
		return nil, fmt.Errorf("socket activation: descriptor %d (%q): %w", p.fd, p.name, err)
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("socket activation: descriptor %d (%q) is a %s socket; want TCP (ListenStream=ADDRESS:PORT)", p.fd, p.name, ln.Addr().Network())
	}
	return tl, nil
}
