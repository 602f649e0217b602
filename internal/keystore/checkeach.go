package keystore

import (
	"context"
	"sync"
)

// CheckEach runs one for every item, at most limit at a time, and collects
// the states: the loop behind an upstream's Check when its API has no
// listing and each item is asked on its own. An error from one means the
// upstream could not be asked at all: it ends the check (the calls still
// running are cancelled) and CheckEach returns it as it is. A ctx that
// ends first gives an ErrUnreachable error naming upstream.
func CheckEach(ctx context.Context, upstream string, items []string, limit int, one func(ctx context.Context, item string) (State, error)) (map[string]State, error) {
	out := make(map[string]State, len(items))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		wg    sync.WaitGroup
		fatal error
		sem   = make(chan struct{}, max(limit, 1))
	)
	for _, item := range items {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			st, err := one(ctx, item)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if fatal == nil {
					fatal = err
					cancel()
				}
				return
			}
			out[item] = st
		})
	}
	wg.Wait()
	if fatal != nil {
		return nil, fatal
	}
	if err := ctx.Err(); err != nil {
		return nil, Errorf(upstream, "", ErrUnreachable, "%w", err)
	}
	return out, nil
}
