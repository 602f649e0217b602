package broker

import (
	"context"
	"sync"

	cofferv1 "coffer/api/coffer/v1"
)

// session is one agent's open Sync stream: an outbox that coalesces Desired
// messages per container (only the newest matters) and a sender goroutine.
// Every batch carries the values its Desired messages refer to, once each,
// so the agent never depends on a value it may have dropped.
type session struct {
	agent  string
	cancel context.CancelFunc

	mu      sync.Mutex
	values  map[verKey]*cofferv1.SecretValue
	desired map[string]*cofferv1.Desired
	order   []string
	wake    chan struct{}
}

func newSession(agent string, cancel context.CancelFunc) *session {
	return &session{agent: agent, cancel: cancel, values: map[verKey]*cofferv1.SecretValue{}, desired: map[string]*cofferv1.Desired{}, wake: make(chan struct{}, 1)}
}

func (s *session) enqueue(vals []*cofferv1.SecretValue, d *cofferv1.Desired) {
	s.mu.Lock()
	for _, v := range vals {
		s.values[verKey{v.Secret, v.Version}] = v
	}
	if _, ok := s.desired[d.ContainerId]; !ok {
		s.order = append(s.order, d.ContainerId)
	}
	s.desired[d.ContainerId] = d
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take empties the outbox.
func (s *session) take() ([]*cofferv1.SecretValue, []*cofferv1.Desired) {
	s.mu.Lock()
	defer s.mu.Unlock()
	vals := make([]*cofferv1.SecretValue, 0, len(s.values))
	for _, v := range s.values {
		vals = append(vals, v)
	}
	clear(s.values)
	ds := make([]*cofferv1.Desired, 0, len(s.order))
	for _, id := range s.order {
		ds = append(ds, s.desired[id])
	}
	s.order = nil
	clear(s.desired)
	return vals, ds
}

// run sends queued messages until ctx ends or a send fails.
func (s *session) run(ctx context.Context, send func(*cofferv1.ServerMessage) error) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.wake:
		}
		vals, ds := s.take()
		if len(vals) > 0 {
			if err := send(&cofferv1.ServerMessage{Msg: &cofferv1.ServerMessage_Values{Values: &cofferv1.Values{Values: vals}}}); err != nil {
				return err
			}
		}
		for _, d := range ds {
			if err := send(&cofferv1.ServerMessage{Msg: &cofferv1.ServerMessage_Desired{Desired: d}}); err != nil {
				return err
			}
		}
	}
}
