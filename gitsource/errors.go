package gitsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"strings"
	"syscall"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

var (
	// ErrBranchNotFound matches (errors.Is) the error returned when the
	// tracked branch does not exist on the remote.
	ErrBranchNotFound = errors.New("branch not found on remote")
	// ErrAuthFailed matches errors where the remote refused the
	// credentials (or required some).
	ErrAuthFailed = errors.New("authentication failed")
	// ErrRevisionNotFound matches errors for a commit that is not (or no
	// longer) in the local store.
	ErrRevisionNotFound = errors.New("revision not in local store")
)

// BranchNotFoundError reports that the tracked branch is missing on the
// remote; it matches ErrBranchNotFound.
type BranchNotFoundError struct {
	Branch string
}

func (e *BranchNotFoundError) Error() string {
	return fmt.Sprintf("branch %s not found on remote", e.Branch)
}

// Is reports whether target is ErrBranchNotFound.
func (e *BranchNotFoundError) Is(target error) bool { return target == ErrBranchNotFound }

// classify turns go-git's errors into this package's vocabulary so callers
// (and Status readers) get a clear reason.
func classify(branch string, err error) error {
	switch {
	case err == nil, errors.Is(err, ErrBranchNotFound), errors.Is(err, ErrAuthFailed):
		return err
	case errors.Is(err, transport.ErrEmptyRemoteRepository),
		errors.Is(err, git.NoMatchingRefSpecError{}):
		return &BranchNotFoundError{Branch: branch}
	case errors.Is(err, transport.ErrAuthenticationRequired),
		errors.Is(err, transport.ErrAuthorizationFailed):
		return fmt.Errorf("%w: check the token or key: %w", ErrAuthFailed, err)
	case isSSHAuthError(err):
		return fmt.Errorf("%w: %w", ErrAuthFailed, err)
	}
	return err
}

// isSSHAuthError recognises x/crypto/ssh's handshake failure, which has no
// exported type.
func isSSHAuthError(err error) bool {
	return containsAny(err.Error(), "ssh: unable to authenticate", "no supported methods remain")
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// fetchFailure says how Fetch should react to a failed incremental fetch.
type fetchFailure int

const (
	// failRemote: the remote is down, refuses us, lacks the branch, or the
	// caller gave up. A fresh clone would fail the same way: just report.
	failRemote fetchFailure = iota
	// failFlaky: the connection broke mid-transfer. Usually the network,
	// but a protocol desync from a bad local shallow state looks the same,
	// so a streak of these while the remote answers warrants a re-clone.
	failFlaky
	// failLocal: anything else (object not found, reference changed
	// concurrently, corrupt pack...): re-clone.
	failLocal
)

func classifyFetchFailure(err error) fetchFailure {
	var (
		opErr   *net.OpError
		dnsErr  *net.DNSError
		httpErr *githttp.Err
		netErr  net.Error
		pathErr *fs.PathError
	)
	switch {
	case errors.As(err, &pathErr):
		// The local store (a syscall.Errno inside also passes for a
		// net.Error, so this comes first).
		return failLocal
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, ErrBranchNotFound), errors.Is(err, ErrAuthFailed),
		errors.Is(err, transport.ErrRepositoryNotFound),
		errors.As(err, &opErr) && opErr.Op == "dial", errors.As(err, &dnsErr),
		errors.As(err, &httpErr),
		containsAny(err.Error(), "knownhosts:", "ssh: handshake failed", "connection refused"):
		return failRemote
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.As(err, &netErr), containsAny(err.Error(), "connection reset", "broken pipe"):
		return failFlaky
	}
	return failLocal
}
