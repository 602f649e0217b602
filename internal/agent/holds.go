package agent

// Holds reports whether the server has answered the report of a prepared
// container: the agent holds its desired state (which may be no file), so
// StartNow can write it without waiting on the server. An OCI
// createRuntime hook prepares and starts a container in one call: it waits
// (bounded) for Holds before calling StartNow, because StartNow records
// the pid, and a pid recorded before the container's process has entered
// its root would send later deliveries to the wrong place.
func (a *Agent) Holds(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	t := a.targets[id]
	return t != nil && !t.gone && (t.want != nil || t.current != nil)
}
