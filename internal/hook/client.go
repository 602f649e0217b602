package hook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// DefaultTimeout bounds the hook's whole exchange with the agent: above
// the agent's own budget (Config.Wait + Config.Limit), far below the
// hook's timeout in the OCI spec (runc kills a hook that outlives it) and
// the kubelet's 2-minute runtime request timeout.
const DefaultTimeout = 5 * time.Second

// Ask sends st to the agent listening on socket and returns its reply.
// Errors wrap ErrUnreachable (no agent, or no answer in time).
func Ask(ctx context.Context, socket string, st State) (Reply, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return Reply{}, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	b, err := json.Marshal(request{V: wireVersion, State: st})
	if err != nil {
		return Reply{}, err
	}
	if _, err := conn.Write(b); err != nil {
		return Reply{}, fmt.Errorf("%w: send: %w", ErrUnreachable, err)
	}
	if uc, ok := conn.(*net.UnixConn); ok {
		_ = uc.CloseWrite()
	}
	var r Reply
	if err := readJSON(conn, maxReplyBytes, &r); err != nil {
		return Reply{}, fmt.Errorf("%w: reply: %w", ErrUnreachable, err)
	}
	if r.V != wireVersion {
		return Reply{}, fmt.Errorf("%w: reply of protocol version %d, want %d", ErrUnreachable, r.V, wireVersion)
	}
	return r, nil
}

// Run is `coffer-agent hook`: it reads the OCI state from stdin, asks the
// agent on socket within timeout, writes what happened to stderr (which
// the runtime records when the hook fails) and returns the exit code.
func Run(stdin io.Reader, stderr io.Writer, socket string, timeout time.Duration) int {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	st, err := ParseState(stdin)
	if err != nil {
		fmt.Fprintf(stderr, "coffer-agent hook: %v\n", err)
		return ExitUsage
	}
	if st.Sandbox() {
		return ExitStart // a pod sandbox gets no files: nothing to ask
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := Ask(ctx, socket, st)
	if err != nil {
		var ne net.Error
		if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
			err = fmt.Errorf("%w: no answer within %v", ErrUnreachable, timeout)
		}
		if st.Required() {
			fmt.Fprintf(stderr, "coffer-agent hook: container %s not started: %v; it requires its secrets (%s=true): it starts once they can be delivered (the kubelet retries; on Docker, start it again)\n", st.ID, err, RequireAnnotation)
			return ExitRefuse
		}
		fmt.Fprintf(stderr, "coffer-agent hook: container %s starts without early delivery (its files follow once the agent serves it): %v\n", st.ID, err)
		return ExitStart
	}
	if !r.Start {
		fmt.Fprintf(stderr, "coffer-agent hook: container %s not started: %s\n", st.ID, clip1k(r.Message))
		return ExitRefuse
	}
	if !r.Ready && r.Message != "" {
		fmt.Fprintf(stderr, "coffer-agent hook: container %s starts: %s\n", st.ID, clip1k(r.Message))
	}
	return ExitStart
}

func clip1k(s string) string {
	if len(s) > 1024 {
		s = s[:1024] + "…"
	}
	return s
}
