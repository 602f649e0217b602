package tmpfs

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"coffer/internal/secret"
)

// manifestName is the file, in the target directory, that lists the files
// Coffer manages there (names, secrets, versions, modes, owners; never
// values). It makes Apply idempotent across agent and helper restarts.
const manifestName = ".coffer"

// tmpPrefix starts the names of files being written; leftovers of a crash
// are removed by the next Apply.
const tmpPrefix = ".coffer-tmp-"

// maxManifest bounds the manifest read back from a container's directory.
const maxManifest = 1 << 20

// entry is one managed file.
type entry struct {
	Name    string `json:"name"`
	Secret  string `json:"secret"`
	Version uint64 `json:"version"`
	Mode    uint32 `json:"mode"`
	UID     uint32 `json:"uid"`
	GID     uint32 `json:"gid"`
}

type manifest struct {
	V     int     `json:"v"`
	Files []entry `json:"files"`
}

// parseManifest decodes a manifest. The directory is inside a container whose
// root may have rewritten it, so entries are validated: a bad name is an
// error (it could point outside the directory), as is a duplicate.
func parseManifest(b []byte) (map[string]entry, error) {
	if len(b) > maxManifest {
		return nil, fmt.Errorf("manifest of %d bytes", len(b))
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if m.V != 1 {
		return nil, fmt.Errorf("manifest version %d", m.V)
	}
	out := make(map[string]entry, len(m.Files))
	for _, e := range m.Files {
		if err := secret.ValidateFileName(e.Name); err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
		if _, dup := out[e.Name]; dup {
			return nil, fmt.Errorf("manifest: %q listed twice", e.Name)
		}
		out[e.Name] = e
	}
	return out, nil
}

// encodeManifest encodes entries sorted by name.
func encodeManifest(entries map[string]entry) []byte {
	m := manifest{V: 1, Files: make([]entry, 0, len(entries))}
	for _, e := range entries {
		m.Files = append(m.Files, e)
	}
	slices.SortFunc(m.Files, func(a, b entry) int { return strings.Compare(a.Name, b.Name) })
	b, _ := json.Marshal(m) // plain structs: cannot fail
	return append(b, '\n')
}
