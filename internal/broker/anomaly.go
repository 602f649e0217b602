package broker

import (
	"context"
	"strconv"
	"time"

	"coffer/internal/audit"
)

// Container reports are rate limited per agent, and what a well-behaved
// agent never does is counted, logged and audited (action agent.anomaly):
//
//   - a report of a container id that another agent holds (a stolen or
//     misconfigured agent claiming someone else's container) is refused;
//   - reports beyond the agent's token bucket are delayed: the broker stops
//     reading that agent's stream until a token is there, so gRPC's flow
//     control pushes back on the agent; nothing is dropped.
//
// The bucket: every container report (a new container, or one reported
// again, which makes the broker send its whole state once more) takes a
// token; a report that the container stopped gives one back, since a
// container that comes and goes does not grow what the server keeps. The
// bucket holds DefaultReportBurst tokens and refills at DefaultReportRate
// a second:
//
//   - a host reconnecting with up to 300 containers (more than Kubernetes'
//     default of 110 pods a node, more than most Docker hosts run) reports
//     them all at once, undelayed;
//   - containers that start and stop, even thousands a second as in
//     coffer-bench fetch, are never delayed;
//   - an agent that grows by more than 300 containers at once is delayed
//     to 30 new containers a second (Docker starts a few to a few tens a
//     second on one host), flagged once per such episode, and each delayed
//     report is counted;
//   - a hostile agent can add at most 30 containers a second to what the
//     server tracks and audits for it, whatever it sends.
//
// An episode (a window of excess) starts at the first delayed report and
// ends when the bucket is full again, a minute at the earliest; it is
// audited once, at its start, so a flood of reports makes at most one
// record a minute, not one per report.
const (
	DefaultReportBurst = 300
	DefaultReportRate  = 30 // tokens a second

	minEpisode = time.Minute
)

// Reasons given in agent.anomaly records and Anomalies.LastAnomalyReason.
const (
	ReasonIDConflict = "container_id_conflict" // reported a container id another agent holds
	ReasonReportRate = "report_rate"           // reported containers faster than its bucket allows
)

// Anomalies counts what an agent did that a well-behaved agent does not.
// JSON field names are those of the API's agent listing.
type Anomalies struct {
	ReportsLimited    uint64    `json:"reports_limited"`               // container reports delayed by the rate limit
	IDConflicts       uint64    `json:"id_conflicts"`                  // reports of container ids another agent holds (refused)
	PodRefusals       uint64    `json:"pod_refusals,omitempty"`        // node agent's containers the API server does not confirm (kube.go)
	LastAnomaly       time.Time `json:"last_anomaly,omitzero"`         // when the last one happened
	LastAnomalyReason string    `json:"last_anomaly_reason,omitempty"` // its reason (Reason*)
}

// host is the broker's state of one agent, kept while the agent is
// enrolled (across its streams), dropped by Disconnect.
type host struct {
	name       string
	labels     map[string]string // set by an admin at enrollment (Agents.Host)
	scope      string            // the agent receives no secret outside it
	containers map[string]*ctr   // by container id
	bucket     bucket
	anomalies  Anomalies
}

// hostLocked returns agent's state, creating it.
func (b *Broker) hostLocked(agent string) *host {
	h := b.hosts[agent]
	if h == nil {
		h = &host{name: agent, containers: map[string]*ctr{}}
		b.hosts[agent] = h
	}
	return h
}

// bucket is a token bucket of container reports.
type bucket struct {
	tokens  float64
	last    time.Time
	excess  bool      // in a window of excess
	since   time.Time // when it opened
	started bool
}

// take takes a token at now and returns how long the report must wait
// before it is handled (0: at once), and whether this report opens a
// window of excess.
func (k *bucket) take(now time.Time, rate, burst float64) (wait time.Duration, opens bool) {
	k.refill(now, rate, burst)
	k.tokens--
	if k.tokens >= 0 {
		return 0, false
	}
	opens = !k.excess
	if opens {
		k.excess, k.since = true, now
	}
	return time.Duration(-k.tokens / rate * float64(time.Second)), opens
}

// give returns a token (a reported container stopped).
func (k *bucket) give(now time.Time, rate, burst float64) {
	k.refill(now, rate, burst)
	k.tokens = min(burst, k.tokens+1)
}

func (k *bucket) refill(now time.Time, rate, burst float64) {
	if !k.started {
		k.tokens, k.last, k.started = burst, now, true
	}
	if d := now.Sub(k.last); d > 0 {
		k.tokens = min(burst, k.tokens+d.Seconds()*rate)
		k.last = now
	}
	if k.tokens >= burst && now.Sub(k.since) >= minEpisode {
		k.excess = false
	}
}

// admitReport applies the report rate limit of sess's agent: it returns
// once the report may be handled, or with an error if ctx ends or the
// stream is no longer the agent's.
func (b *Broker) admitReport(ctx context.Context, sess *session) error {
	agent := sess.agent
	b.mu.Lock()
	if b.sessions[agent] != sess {
		b.mu.Unlock()
		return errClosed
	}
	h := b.hostLocked(agent)
	wait, opens := h.bucket.take(time.Now(), b.cfg.ReportRate, float64(b.cfg.ReportBurst))
	if wait > 0 {
		h.anomalies.ReportsLimited++
		if opens {
			h.anomalies.LastAnomaly, h.anomalies.LastAnomalyReason = time.Now().UTC(), ReasonReportRate
		}
	}
	b.mu.Unlock()
	if wait == 0 {
		return nil
	}
	if opens {
		b.log.Warn("agent reports containers faster than its limit; delaying its stream", "agent", agent,
			"burst", b.cfg.ReportBurst, "per_second", b.cfg.ReportRate)
		b.auditLater("agent:"+agent, anomalyEvent(agent, ReasonReportRate, "delayed", map[string]string{
			"burst": fmtFloat(float64(b.cfg.ReportBurst)), "per_second": fmtFloat(b.cfg.ReportRate),
		}))
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func anomalyEvent(agent, reason, result string, details map[string]string) audit.Event {
	d := map[string]string{"agent": agent, "reason": reason}
	for k, v := range details {
		d[k] = v
	}
	return audit.Event{Actor: "agent:" + agent, Action: "agent.anomaly", Object: "agent:" + agent, Result: result, Details: d}
}

// Anomalies returns the anomaly counts of every agent that has any, by
// agent name.
func (b *Broker) Anomalies() map[string]Anomalies {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]Anomalies{}
	for name, h := range b.hosts {
		if !h.anomalies.LastAnomaly.IsZero() {
			out[name] = h.anomalies
		}
	}
	return out
}

func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
