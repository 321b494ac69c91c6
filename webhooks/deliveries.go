package webhooks

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"sync"

	"merlin.dev/merlin/internal/atomicfile"
)

// DefaultRemember is how many delivery ids a Deliveries store keeps.
// GitHub redelivers on request, from the last three days; at a few hundred
// deliveries a day this covers them.
const DefaultRemember = 2048

// deliveryID is what a delivery id may be (GitHub sends GUIDs); anything
// else is refused, so that the store's file stays one id per line.
var deliveryID = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

// Deliveries remembers the last N delivery ids, in memory and in a file
// (one id per line, oldest first), so that a redelivery acts once, across
// restarts too. New ids are appended to the file; when it holds twice N
// lines it is rewritten with the last N (atomicfile), so it stays bounded.
type Deliveries struct {
	path string
	max  int

	mu    sync.Mutex
	order []string // oldest first; at most max
	seen  map[string]bool
	lines int // lines in the file
}

// OpenDeliveries loads the store kept in path (created when missing),
// remembering the last remember ids (DefaultRemember when 0).
func OpenDeliveries(path string, remember int) (*Deliveries, error) {
	if remember <= 0 {
		remember = DefaultRemember
	}
	s := &Deliveries{path: path, max: remember, seen: map[string]bool{}}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read deliveries: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		s.lines++
		if id := sc.Text(); deliveryID.MatchString(id) && !s.seen[id] {
			s.remember(id)
		}
	}
	return s, nil
}

// remember adds id in memory, forgetting the oldest beyond max.
func (s *Deliveries) remember(id string) {
	s.order = append(s.order, id)
	s.seen[id] = true
	if len(s.order) > s.max {
		delete(s.seen, s.order[0])
		s.order = s.order[1:]
	}
}

// Add records id and reports whether it is new. A repeated id returns
// false and changes nothing. The file is written before Add returns, so a
// delivery acknowledged after Add is remembered by the next process.
func (s *Deliveries) Add(id string) (bool, error) {
	if !deliveryID.MatchString(id) {
		return false, fmt.Errorf("delivery id %q is not a GUID", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen[id] {
		return false, nil
	}
	s.remember(id)
	if s.lines+1 >= 2*s.max {
		return true, s.compact()
	}
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return true, fmt.Errorf("record delivery: %w", err)
	}
	_, err = f.WriteString(id + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return true, fmt.Errorf("record delivery: %w", err)
	}
	s.lines++
	return true, nil
}

// Forget drops id (a delivery that could not be queued, so that GitHub's
// redelivery is accepted). It stays in the file until the next compaction
// only if that file was not rewritten; the file is rewritten now.
func (s *Deliveries) Forget(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.seen[id] {
		return nil
	}
	delete(s.seen, id)
	for i, o := range s.order {
		if o == id {
			s.order = append(s.order[:i:i], s.order[i+1:]...)
			break
		}
	}
	return s.compact()
}

// compact rewrites the file with the ids in memory.
func (s *Deliveries) compact() error {
	var b bytes.Buffer
	for _, id := range s.order {
		b.WriteString(id)
		b.WriteByte('\n')
	}
	if err := atomicfile.Write(s.path, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("record deliveries: %w", err)
	}
	s.lines = len(s.order)
	return nil
}

// Len is how many ids are remembered.
func (s *Deliveries) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.order)
}
