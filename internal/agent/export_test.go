package agent

import "time"

// SetValueGrace changes how long unreferenced values are kept, for a test;
// it returns what restores the default.
func SetValueGrace(d time.Duration) (restore func()) {
	old := valueGrace
	valueGrace = d
	return func() { valueGrace = old }
}
