package github

import (
	"strings"
	"sync"
)

// secrets are the values no error may carry: the token, each installation
// token and JWT minted, the private key.
type secrets struct {
	mu   sync.RWMutex
	vals []string
}

func (s *secrets) add(v string) {
	if len(v) < 8 { // too short to be a credential, and to replace safely
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vals = append(s.vals, v)
}

// scrub returns err with every secret in its message replaced; errors.Is
// and errors.As still see the original chain.
func (s *secrets) scrub(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	s.mu.RLock()
	clean := msg
	for _, v := range s.vals {
		clean = strings.ReplaceAll(clean, v, "[REDACTED]")
	}
	s.mu.RUnlock()
	if clean == msg {
		return err
	}
	return &redactedError{msg: clean, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
