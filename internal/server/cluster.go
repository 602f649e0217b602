package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"coffer/internal/api"
	"coffer/internal/audit"
	"coffer/internal/identity"
	"coffer/internal/seal"
	"coffer/internal/store"
	"coffer/internal/store/etcd"
)

// Files and store keys of a server on a shared store (etcd).
const (
	serverIDFile     = "server.id"       // this server's name among the installation's servers
	installationFile = "installation.id" // the installation this data dir belongs to
	installationKey  = "meta/installation"
	clusterCAKey     = "meta/ca" // the CA: certificate, and key sealed under the master key
)

var caKeyAAD = []byte("coffer/ca-key/v1")

// EtcdConfig is the etcd section of the configuration (store etcd): the
// etcd store's own options (docs/ha.md).
type EtcdConfig = etcd.Config

// installation is the record at installationKey.
type installation struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
}

// clusterCA is the record at clusterCAKey.
type clusterCA struct {
	Cert string        `json:"cert"` // PEM
	Key  seal.Envelope `json:"key"`  // PKCS#8 PEM, sealed
}

func storeWhere(cfg Config) string {
	if cfg.Store == StoreEtcd {
		p := cfg.Etcd.Prefix
		if p == "" {
			p = etcd.DefaultPrefix
		}
		return fmt.Sprintf("etcd prefix %q at %s", p, strings.Join(cfg.Etcd.Endpoints, ","))
	}
	return cfg.DataDir
}

// openEtcd opens the etcd store and checks, writing nothing, that it and
// the data dir belong together. fresh reports an empty prefix: this server
// is the first and initializes it.
func openEtcd(ctx context.Context, cfg Config, log *slog.Logger) (*etcd.Backend, bool, error) {
	if _, err := os.Stat(filepath.Join(cfg.DataDir, storeFile)); err == nil {
		return nil, false, fmt.Errorf("data dir %s holds a bolt store (%s), but the server is configured with store etcd: give each etcd server a data dir of its own; nothing was changed",
			cfg.DataDir, storeFile)
	}
	ec := cfg.Etcd
	ec.Logger = log
	st, err := etcd.Open(ctx, ec)
	if err != nil {
		return nil, false, err
	}
	var inst installation
	hasCanary, hasInst := false, false
	err = st.View(ctx, func(tx store.Tx) error {
		if _, err := tx.Get("meta/canary"); err == nil {
			hasCanary = true
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		v, err := tx.Get(installationKey)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return nil
		case err != nil:
			return err
		}
		hasInst = true
		return json.Unmarshal(v, &inst)
	})
	if err != nil {
		st.Close()
		return nil, false, fmt.Errorf("%s: read: %w", storeWhere(cfg), err)
	}
	if !hasCanary && cfg.EtcdJoin {
		st.Close()
		return nil, false, fmt.Errorf("%s is empty: nothing to join (etcd_join is set: wrong --etcd-endpoints or --etcd-prefix?); nothing was changed", storeWhere(cfg))
	}
	mine, err := os.ReadFile(filepath.Join(cfg.DataDir, installationFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		st.Close()
		return nil, false, fmt.Errorf("data dir: %w", err)
	default:
		id := strings.TrimSpace(string(mine))
		held := "nothing"
		if hasInst {
			held = "installation " + inst.ID
		} else if hasCanary {
			held = "an installation of unknown id"
		}
		if !hasInst || inst.ID != id {
			st.Close()
			return nil, false, fmt.Errorf("data dir %s belongs to Coffer installation %s, but %s holds %s: wrong --etcd-endpoints or --etcd-prefix? Nothing was changed",
				cfg.DataDir, id, storeWhere(cfg), held)
		}
	}
	return st, !hasCanary, nil
}

// joinCluster runs after the catalog has checked (or, on an empty prefix,
// sealed) the master key canary: it records the installation id in the
// store (the first server) and in the data dir, and loads the CA from the
// store, creating it there first on an empty prefix. Every step is a
// compare-and-swap, so servers starting together agree on one CA.
func joinCluster(ctx context.Context, st store.Backend, ring *seal.Ring, cfg Config, log *slog.Logger) (*identity.CA, error) {
	inst := installation{ID: randomID(), Created: time.Now().UTC()}
	raw, _ := json.Marshal(inst)
	if err := st.Update(ctx, func(tx store.Tx) error { return putIfAbsent(tx, installationKey, raw) }); err != nil {
		return nil, fmt.Errorf("installation id: %w", err)
	}
	if err := st.View(ctx, func(tx store.Tx) error {
		v, err := tx.Get(installationKey)
		if err != nil {
			return err
		}
		return json.Unmarshal(v, &inst)
	}); err != nil {
		return nil, fmt.Errorf("installation id: %w", err)
	}
	if err := writeOnce(filepath.Join(cfg.DataDir, installationFile), []byte(inst.ID+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("installation id: %w", err)
	}
	ca, created, err := loadOrCreateClusterCA(ctx, st, ring)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("created the Coffer CA in the store", "store", storeWhere(cfg))
	}
	// ca.pem in every server's data dir, for agents and the CLI.
	if err := writeOnce(filepath.Join(cfg.DataDir, identity.CACertFile), ca.CertPEM, 0o644); err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	return ca, nil
}

func loadOrCreateClusterCA(ctx context.Context, st store.Backend, ring *seal.Ring) (*identity.CA, bool, error) {
	created := false
	for range 2 {
		var rec clusterCA
		found := false
		err := st.View(ctx, func(tx store.Tx) error {
			v, err := tx.Get(clusterCAKey)
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			found = true
			return json.Unmarshal(v, &rec)
		})
		if err != nil {
			return nil, false, fmt.Errorf("CA: read the store: %w", err)
		}
		if found {
			keyPEM, err := seal.Open(ctx, ring, rec.Key, caKeyAAD)
			if err != nil {
				return nil, false, fmt.Errorf("CA: open its key: %w", err)
			}
			defer clear(keyPEM)
			ca, err := identity.ParseCA([]byte(rec.Cert), keyPEM)
			if err != nil {
				return nil, false, fmt.Errorf("CA in the store: %w", err)
			}
			return ca, created, nil
		}
		ca, keyPEM, err := identity.NewCA()
		if err != nil {
			return nil, false, err
		}
		env, err := seal.Seal(ctx, ring, keyPEM, caKeyAAD)
		clear(keyPEM)
		if err != nil {
			return nil, false, fmt.Errorf("CA: seal its key: %w", err)
		}
		raw, err := json.Marshal(clusterCA{Cert: string(ca.CertPEM), Key: env})
		if err != nil {
			return nil, false, err
		}
		if err := st.Update(ctx, func(tx store.Tx) error { return putIfAbsent(tx, clusterCAKey, raw) }); err != nil {
			return nil, false, fmt.Errorf("CA: store it: %w", err)
		}
		created = true // or another server's won: read it back either way
	}
	return nil, false, errors.New("CA: not found in the store after creating it")
}

// putIfAbsent writes key in tx unless it exists.
func putIfAbsent(tx store.Tx, key string, value []byte) error {
	_, err := tx.Get(key)
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	return tx.Put(key, value)
}

// writeOnce writes data to path unless the file exists; an existing file
// must hold the same bytes (it belongs to this installation).
func writeOnce(path string, data []byte, perm fs.FileMode) error {
	old, err := os.ReadFile(path)
	switch {
	case err == nil:
		if !bytes.Equal(bytes.TrimSpace(old), bytes.TrimSpace(data)) {
			return fmt.Errorf("%s exists and differs from the installation's in the store: this data dir belongs to another installation; nothing was changed", path)
		}
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// serverID returns this server's id, made at its first start with this
// data dir: its audit chain is anchored under it.
func serverID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, serverIDFile)
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if id == "" || strings.ContainsAny(id, "/\x00") {
			return "", fmt.Errorf("%s: bad server id %q", path, id)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	id := randomID()
	if err := writeOnce(path, []byte(id+"\n"), 0o600); err != nil {
		return "", err
	}
	return id, nil
}

func randomID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// serverRecord is a server's registration at serversPrefix+id.
type serverRecord struct {
	ID         string    `json:"id"`
	Address    string    `json:"address"`
	Started    time.Time `json:"started"`
	ReplacedBy string    `json:"replaced_by,omitempty"`
}

const serversPrefix = "servers/"

// advertised is the address other servers' clients reach this one at:
// cfg.Advertise, or the listening address when its host is a specific one,
// or the host's name with the port.
func advertised(cfg Config, ln net.Addr) string {
	if cfg.Advertise != "" {
		return cfg.Advertise
	}
	host, port, err := net.SplitHostPort(ln.String())
	if err != nil {
		return ln.String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return net.JoinHostPort(host, port)
}

// register records this server (id, address) in the store, and marks the
// servers registered before at the same address as replaced by it: their
// audit chains were in a data dir this server no longer has.
func register(ctx context.Context, st store.Backend, id, addr string) error {
	return st.Update(ctx, func(tx store.Tx) error {
		var others []serverRecord
		err := tx.List(serversPrefix, func(_ string, v []byte) error {
			var r serverRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("%w: %v", store.ErrCorrupt, err)
			}
			if r.ID != id && r.Address == addr && r.ReplacedBy == "" {
				others = append(others, r)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, r := range others {
			r.ReplacedBy = id
			b, _ := json.Marshal(r)
			if err := tx.Put(serversPrefix+r.ID, b); err != nil {
				return err
			}
		}
		b, _ := json.Marshal(serverRecord{ID: id, Address: addr, Started: time.Now().UTC()})
		return tx.Put(serversPrefix+id, b)
	})
}

// auditServers lists the installation's servers and the heads of their
// audit chains as anchored in the store.
func auditServers(ctx context.Context, st store.Backend, self string, selfHead audit.Head) ([]api.AuditServer, error) {
	var out []api.AuditServer
	err := st.View(ctx, func(tx store.Tx) error {
		out = nil
		var recs []serverRecord
		if err := tx.List(serversPrefix, func(_ string, v []byte) error {
			var r serverRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("%w: %v", store.ErrCorrupt, err)
			}
			recs = append(recs, r)
			return nil
		}); err != nil {
			return err
		}
		for _, r := range recs {
			as := api.AuditServer{ID: r.ID, Address: r.Address, Self: r.ID == self, ReplacedBy: r.ReplacedBy}
			if as.Self {
				as.Head = selfHead
			} else if v, err := tx.Get(audit.ServersPrefix + r.ID + "/head"); err == nil {
				var m audit.Mark
				if err := json.Unmarshal(v, &m); err != nil {
					return fmt.Errorf("audit head of server %s: %w: %v", r.ID, store.ErrCorrupt, err)
				}
				as.Head = m.Head
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			out = append(out, as)
		}
		return nil
	})
	return out, err
}
