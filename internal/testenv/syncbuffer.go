package testenv

import (
	"bytes"
	"sync"
)

// SyncBuffer collects output a test reads while something else writes it:
// a child process's stdout or stderr (copied by os/exec's goroutine), or a
// logger of the code under test.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
