package security_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// `coffer agent rm` while the agent's stream is being opened: whichever
// comes first, the stream does not stay open. The window is narrow on a
// real server (the broker's own test widens it with a hook and fails
// without the fix, see internal/broker TestStreamAuthenticatedBeforeRemovalIsClosed);
// this runs the race many times end to end.
func TestRemovalRacingAStreamLeavesNoOpenStream(t *testing.T) {
	srv, admin := start(t)
	const rounds = 15
	for i := range rounds {
		a := enroll(t, srv, admin, fmt.Sprintf("racer-%d", i))
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			admin.Must(t, "DELETE", "/v1/agents/"+a.Name, nil, nil)
		}()
		s := a.Dial(t)
		wg.Wait()
		ended, err := s.Closed(5 * time.Second)
		if !ended {
			t.Fatalf("round %d: the removed agent's stream is still open", i)
		}
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("round %d: stream ended with %v", i, err)
		}
	}
	if as := admin.Agents(t); len(as) != 0 {
		t.Fatalf("agents left: %v", as)
	}
}
