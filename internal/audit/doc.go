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
// canonical encoding without Hash (JSON with the fields in declaration order,
// Details keys sorted, Time in UTC). A line must be exactly that encoding
// followed by ",\"hash\":...}". [Verify] walks the chain and reports
// [ErrTampered] with the line and seq where it breaks, so any edited,
// removed, inserted or reordered record is found; given the [Head] noted
// earlier it also finds a removed tail.
//
// A chain proves order and integrity, not authenticity: someone who can
// rewrite the whole file can recompute every hash. Keep a Head somewhere
// else (log it, export it, print it) and pass it to Verify to catch that.
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
