// Package audit keeps Coffer's tamper-evident audit trail: who did what to
// which object, with what result, from where and when, for every admin API
// request and every delivery. A record never holds a secret value: only
// names, ids, versions and container names.
//
// # Format
//
// The trail is an append-only file of JSON lines, one [Event] a line, mode
// 0600. Records are numbered from 1 and hash-chained: each record's Hash is
// the hex SHA-256 of its predecessor's Hash, a newline, and the record's own
// canonical encoding without Hash and MAC (JSON with the fields in
// declaration order, Details keys sorted, Time in UTC: exactly the bytes
// encoding/json's Marshal writes for it, HTML escaping included, which the
// committer writes by hand). A line must be
// exactly that encoding followed by ",\"hash\":...}" or, once the trail has
// a key, ",\"hash\":...,\"mac\":...}". [Verify] walks the chain and reports
// [ErrTampered] with the line and seq where it breaks, so any edited,
// removed, inserted or reordered record is found; given the [Head] noted
// earlier it also finds a removed tail.
//
// # Authenticity
//
// A chain alone proves order and integrity, not authorship: someone who can
// rewrite the whole file can recompute every hash. A Log opened with an
// [Anchor] (in coffer-server: [StoreAnchor], in the server's store, the key
// sealed under the master key) closes that gap. Each record carries a MAC,
// the HMAC-SHA-256 of its hash under a random 256-bit key that never leaves
// the Anchor and the Log's memory, and after each group commit the Log
// saves a [Mark] (the head, and a MAC over it) in the Anchor before it
// releases the group's callers: at most one write per group, always after
// the group's fsync, so the Anchor is never ahead of the file. The Anchor
// write runs while the next group is written to the file, and groups written
// meanwhile share the next Anchor write. [Open] then refuses a file that ends before the Mark (records cut while
// the server was stopped), does not contain it, or has a record with a
// missing or wrong MAC; it accepts a file ahead of the Mark (a crash after a
// group's fsync and before its Mark: records whose Append had not returned)
// and re-anchors it. [Log.Verify] checks the MACs online;
// offline, [VerifyWith] checks the chain and an exported head
// ([VerifyOptions].Through), not the MACs, for want of the key.
//
// A trail written before MACs existed is migrated at its first Open with an
// Anchor: its head is anchored and records carry MACs from the next seq on
// (Mark.MACFrom); the older records stay as they were, covered by the chain
// up to the first MAC. Once one record has a MAC, a later one without is
// tampering, even offline.
//
// What no Anchor can catch is a rollback of both the file and the Anchor to
// an earlier state (an old copy of the whole data dir), or anything done by
// someone who holds the master key. A head kept somewhere else (coffer
// audit head) catches those too, up to that head.
//
// # Durability
//
// [Log.Append] returns only once its record is on disk (fsync). Concurrent
// appends are committed in groups: one write and one fsync per group, each
// caller released when its group is durable, so throughput grows with
// concurrency instead of being one fsync per record. If a write or fsync
// fails, that group's appends fail and so does every later one: what reached
// the disk is unknown, so the log stops rather than guess. Reopening
// verifies the file and refuses a torn last line or a broken chain; the
// package never rewrites or truncates the file.
package audit
