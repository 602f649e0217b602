package console

import (
	"cmp"
	"net/http"
	"slices"

	"coffer/internal/api"
	"coffer/internal/catalog"
)

// hostsView lists the agents with what their containers hold. The API has
// no per-container listing; the console puts it together from the
// secrets the session may see (GET /v1/secrets, then each secret's
// holders), so a scoped session sees only its scope's deliveries.
type hostsView struct {
	Hosts   []hostRow
	Partial bool // more than maxHostSecrets secrets: only the first were read
}

// maxHostSecrets bounds the secrets whose holders the hosts page reads.
const maxHostSecrets = 1000

type hostRow struct {
	api.AgentView
	Containers []containerRow // containers holding (or about to hold) a secret the session may see
	Others     int            // reported containers that hold none of them
}

type containerRow struct {
	ID, Name string
	Files    []heldFile
}

type heldFile struct {
	Secret  string
	Version uint64 // acknowledged; 0: none yet
	Current uint64
	Pending bool
}

func (c *Console) hosts(s *sess, r *http.Request) (hostsView, error) {
	var agents []api.AgentView
	if _, err := c.as(s, r, call{method: http.MethodGet, path: "/v1/agents"}, &agents); err != nil {
		return hostsView{}, err
	}
	var secrets []catalog.SecretMeta
	if _, err := c.as(s, r, call{method: http.MethodGet, path: "/v1/secrets"}, &secrets); err != nil {
		return hostsView{}, err
	}
	var out hostsView
	if len(secrets) > maxHostSecrets {
		secrets, out.Partial = secrets[:maxHostSecrets], true
	}
	byAgent := map[string]map[string]*containerRow{}
	for _, m := range secrets {
		v, err := c.showSecret(s, r, m.Name)
		if err != nil {
			continue // deleted meanwhile
		}
		for _, h := range v.Holders {
			cs := byAgent[h.Agent]
			if cs == nil {
				cs = map[string]*containerRow{}
				byAgent[h.Agent] = cs
			}
			row := cs[h.ContainerID]
			if row == nil {
				row = &containerRow{ID: h.ContainerID, Name: h.ContainerName}
				cs[h.ContainerID] = row
			}
			row.Files = append(row.Files, heldFile{Secret: m.Name, Version: h.Version, Current: v.Current, Pending: h.Pending})
		}
	}
	for _, a := range agents {
		row := hostRow{AgentView: a}
		for _, ct := range byAgent[a.Name] {
			row.Containers = append(row.Containers, *ct)
		}
		slices.SortFunc(row.Containers, func(x, y containerRow) int { return cmp.Or(cmp.Compare(x.Name, y.Name), cmp.Compare(x.ID, y.ID)) })
		row.Others = max(a.Containers-len(row.Containers), 0)
		out.Hosts = append(out.Hosts, row)
	}
	return out, nil
}

func (c *Console) hostsPage(s *sess, w http.ResponseWriter, r *http.Request) {
	v, err := c.hosts(s, r)
	if err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	c.render(w, s, http.StatusOK, "hosts", "Hosts", v)
}

func (c *Console) hostsFragment(s *sess, w http.ResponseWriter, r *http.Request) {
	v, err := c.hosts(s, r)
	if err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	c.fragment(w, "hosts", "hosttable", v)
}
