package incident

import (
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"coffer/internal/audit"
)

// Report is the chain of custody of one secret over a time window, built
// from the audit trail only: who changed it, which hosts received it, and
// which containers held which version from when to when. Every entry names
// the audit records (seq) it comes from, so it can be checked against the
// verified chain.
type Report struct {
	Secret string    `json:"secret"`
	Since  time.Time `json:"since,omitzero"`
	Until  time.Time `json:"until"`
	// Changes are the changes to the secret in the window (puts, upstream
	// syncs, rollbacks, deletions, links, revocations), oldest first.
	Changes []Change `json:"changes"`
	// Holdings are the containers that held a version of the secret at
	// some time in the window, by container then file then time.
	Holdings []Holding `json:"holdings"`
	// Writers are the principals that gave the secret a value in the
	// window (they knew it); Hosts the agents that were sent a value of it
	// (root on those hosts could read it), both sorted.
	Writers []string `json:"writers"`
	Hosts   []string `json:"hosts"`
	// Records is how many audit records about the secret were read.
	Records int `json:"records"`
	// Head is the audit chain's head the report was built against, and
	// Verified whether the chain up to it verified (set by the caller).
	Head     audit.Head `json:"head"`
	Verified bool       `json:"verified"`
}

// Change is one change to the secret.
type Change struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Actor   string    `json:"actor"`
	Action  string    `json:"action"`
	Result  string    `json:"result"`
	Version string    `json:"version,omitempty"`
	Reason  string    `json:"reason,omitempty"`
}

// Holding is one container holding one version in one file.
type Holding struct {
	Agent       string    `json:"agent"`
	ContainerID string    `json:"container_id"`
	Container   string    `json:"container"`
	ImageDigest string    `json:"image_digest,omitempty"`
	File        string    `json:"file"`
	Version     uint64    `json:"version"`
	From        time.Time `json:"from"`
	To          time.Time `json:"to,omitzero"` // zero: still held at the end of the trail
	Ended       string    `json:"ended,omitempty"`
	FromSeq     uint64    `json:"from_seq"`
	ToSeq       uint64    `json:"to_seq,omitempty"`
}

// writerActions give a secret a value its actor knew.
var writerActions = map[string]bool{"secret.put": true, "secret.link": true}

// Build makes the report of secret for [since, until) (since zero: from
// the start; until zero: now) from events, the audit records about it
// (audit.Filter{Secret: secret}, all of them: a holding that began before
// since is still shown), in any order.
func Build(secret string, events []audit.Event, since, until time.Time) Report {
	if until.IsZero() {
		until = time.Now().UTC()
	}
	evs := slices.Clone(events)
	sort.Slice(evs, func(i, j int) bool { return evs[i].Seq < evs[j].Seq })
	r := Report{Secret: secret, Since: since, Until: until, Changes: []Change{}, Holdings: []Holding{}, Writers: []string{}, Hosts: []string{}, Records: len(evs)}
	in := func(t time.Time) bool { return !t.Before(since) && t.Before(until) }
	open := map[string]int{} // container id + file -> index in all
	var all []Holding
	writers, hosts := map[string]bool{}, map[string]bool{}
	closeAt := func(key string, e audit.Event) {
		if i, ok := open[key]; ok {
			all[i].To, all[i].ToSeq, all[i].Ended = e.Time, e.Seq, e.Action
			delete(open, key)
		}
	}
	for _, e := range evs {
		d := e.Details
		switch {
		case strings.HasPrefix(e.Action, "delivery."):
			if d["secret"] != secret || e.Result != audit.ResultOK {
				continue
			}
			key := d["container_id"] + "\x00" + d["file"]
			v, _ := strconv.ParseUint(d["version"], 10, 64)
			switch e.Action {
			case "delivery.send":
				if in(e.Time) {
					hosts[d["agent"]] = true
				}
			case "delivery.apply", "delivery.rotate":
				closeAt(key, e)
				open[key] = len(all)
				all = append(all, Holding{Agent: d["agent"], ContainerID: d["container_id"], Container: d["container"],
					ImageDigest: d["image_digest"], File: d["file"], Version: v, From: e.Time, FromSeq: e.Seq})
			case "delivery.revoke", "delivery.remove":
				closeAt(key, e)
			}
		case e.Object == "secret:"+secret && (strings.HasPrefix(e.Action, "secret.") || strings.HasPrefix(e.Action, "incident.")):
			if strings.HasSuffix(e.Action, ".show") || strings.HasSuffix(e.Action, ".list") || !in(e.Time) {
				continue
			}
			c := Change{Seq: e.Seq, Time: e.Time, Actor: e.Actor, Action: e.Action, Result: e.Result, Version: d["version"], Reason: d["reason"]}
			r.Changes = append(r.Changes, c)
			if writerActions[e.Action] && e.Result == audit.ResultOK && d["generated"] != "true" {
				writers[e.Actor] = true
			}
		}
	}
	for _, h := range all {
		if h.From.Before(until) && (h.To.IsZero() || !h.To.Before(since)) {
			r.Holdings = append(r.Holdings, h)
			hosts[h.Agent] = true
		}
	}
	sort.SliceStable(r.Holdings, func(i, j int) bool {
		a, b := r.Holdings[i], r.Holdings[j]
		if a.ContainerID != b.ContainerID {
			return a.ContainerID < b.ContainerID
		}
		if a.File != b.File {
			return a.File < b.File
		}
		return a.FromSeq < b.FromSeq
	})
	delete(hosts, "")
	r.Writers = append(r.Writers, slices.Sorted(maps.Keys(writers))...)
	r.Hosts = append(r.Hosts, slices.Sorted(maps.Keys(hosts))...)
	return r
}

// HeldVersion lists the holdings of version v (a leaked version's
// exposure).
func (r Report) HeldVersion(v uint64) []Holding {
	out := []Holding{}
	for _, h := range r.Holdings {
		if h.Version == v {
			out = append(out, h)
		}
	}
	return out
}
