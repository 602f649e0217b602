package container

import "context"

// Signaler is implemented by runtimes that can send a signal to a
// container's main process through their own API (Docker's kill with a
// signal). The agent uses it to carry out a binding's "signal:SIGHUP"
// rotation contract; a runtime without it cannot, and the agent reports
// that as a failed delivery.
type Signaler interface {
	// Signal sends sig, a signal name such as "SIGHUP", to the main
	// process of the running container id.
	Signal(ctx context.Context, id, sig string) error
}
