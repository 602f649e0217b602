package vault

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
)

// Hints configures change hints from Vault's socket audit device: Vault
// sends one JSON line per request to an audit device of type socket, and
// a write to a KV v2 path (data, metadata, delete, undelete, destroy) is a
// hint that the item may have changed. Coffer then checks that item at
// once instead of at the next poll; the answer of the check is what
// counts, never the hint (a forged hint costs one metadata read).
//
// Enable it beside a file audit device, never alone: Vault refuses
// requests when it can write to none of its audit devices, so a lone
// socket device wedges Vault whenever Coffer is down:
//
//	vault audit enable file file_path=/var/log/vault/audit.log
//	vault audit enable -path=coffer socket address=127.0.0.1:9201 socket_type=tcp
type Hints struct {
	// Listen is the TCP address Coffer listens on for the socket audit
	// device, e.g. 127.0.0.1:9201.
	Listen string `yaml:"listen"`
}

func (h *Hints) validate() error {
	host, port, err := net.SplitHostPort(h.Listen)
	if err != nil || port == "" {
		return fmt.Errorf("change_hints.listen %q: want host:port, e.g. 127.0.0.1:9201", h.Listen)
	}
	if host == "" {
		return fmt.Errorf("change_hints.listen %q: give the address to listen on (e.g. 127.0.0.1:9201), not every interface", h.Listen)
	}
	return nil
}

// maxAuditLine bounds one audit entry; longer lines (a request with a
// huge body) are skipped.
const maxAuditLine = 1 << 20

// hintFeed listens for a socket audit device and turns KV writes into
// item names.
type hintFeed struct {
	ln    net.Listener
	mount string
	log   *slog.Logger
	ch    chan []string

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func startHints(addr, mount string, log *slog.Logger) (*hintFeed, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("change_hints.listen: %w", err)
	}
	h := &hintFeed{ln: ln, mount: mount, log: log, ch: make(chan []string, 64), conns: map[net.Conn]struct{}{}}
	h.wg.Add(1)
	go h.serve()
	log.Info("vault: listening for change hints from a socket audit device", "addr", ln.Addr().String())
	return h, nil
}

func (h *hintFeed) serve() {
	defer h.wg.Done()
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			c.Close()
			return
		}
		h.conns[c] = struct{}{}
		h.wg.Add(1)
		h.mu.Unlock()
		go h.read(c)
	}
}

// auditEntry is the part of a Vault audit entry that says what was
// written. Paths are not HMAC'd by Vault (values and tokens are).
type auditEntry struct {
	Type    string `json:"type"`
	Request struct {
		Operation string `json:"operation"`
		Path      string `json:"path"`
	} `json:"request"`
	Error string `json:"error"`
}

func (h *hintFeed) read(c net.Conn) {
	defer func() {
		c.Close()
		h.mu.Lock()
		delete(h.conns, c)
		h.mu.Unlock()
		h.wg.Done()
	}()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), maxAuditLine)
	for sc.Scan() {
		var e auditEntry
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		if item, ok := hintItem(h.mount, e); ok {
			select {
			case h.ch <- []string{item}:
			default: // full: the poll will see it
			}
		}
	}
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if err := sc.Err(); err != nil && !closed {
		h.log.Warn("vault: change hints connection dropped", "err", err)
	}
}

// hintItem returns the KV item a successful write names, if any.
func hintItem(mount string, e auditEntry) (string, bool) {
	if e.Type != "response" || e.Error != "" {
		return "", false
	}
	switch e.Request.Operation {
	case "create", "update", "delete", "patch":
	default:
		return "", false
	}
	rest, ok := strings.CutPrefix(e.Request.Path, mount+"/")
	if !ok {
		return "", false
	}
	for _, sub := range []string{"data/", "metadata/", "delete/", "undelete/", "destroy/"} {
		if item, ok := strings.CutPrefix(rest, sub); ok && item != "" && validatePath("item", item) == nil {
			return item, true
		}
	}
	return "", false
}

func (h *hintFeed) close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	for c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
	h.ln.Close()
	h.wg.Wait()
	close(h.ch)
}
