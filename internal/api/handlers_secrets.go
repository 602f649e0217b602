package api

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"

	"coffer/internal/authz"
	"coffer/internal/broker"
	"coffer/internal/catalog"
	"coffer/internal/secret"
)

const smallBody = 64 << 10

// PutSecretRequest is the body of PUT /v1/secrets/{name}: exactly one of
// Value (base64) and Generate.
type PutSecretRequest struct {
	Value    *string       `json:"value,omitempty"`
	Generate *GenerateSpec `json:"generate,omitempty"`
}

// GenerateSpec asks the server to make a random value.
type GenerateSpec struct {
	Length   int    `json:"length"`
	Alphabet string `json:"alphabet,omitempty"`
}

func (s *Server) putSecret(r *request) (int, any, error) {
	name := r.PathValue("name")
	if err := r.authorize("secret:"+name, name); err != nil {
		return 0, nil, err
	}
	if err := secret.ValidateName(name); err != nil {
		return 0, nil, err
	}
	var req PutSecretRequest
	limit := int64(s.cfg.MaxValueSize)*4/3 + smallBody
	if err := decode(r.Request, limit, &req); err != nil {
		return 0, nil, err
	}
	var meta catalog.SecretMeta
	var err error
	switch {
	case (req.Value == nil) == (req.Generate == nil):
		return 0, nil, fmt.Errorf("%w: give exactly one of \"value\" (base64) and \"generate\"", errBadRequest)
	case req.Generate != nil:
		meta, err = s.cfg.Catalog.Generate(r.Context(), name, req.Generate.Length, req.Generate.Alphabet, r.p.ID)
		r.note("generated", "true")
	default:
		v, derr := base64.StdEncoding.DecodeString(*req.Value)
		if derr != nil {
			return 0, nil, fmt.Errorf("%w: \"value\" is not valid base64", errBadRequest)
		}
		val := secret.Value(v)
		meta, err = s.cfg.Catalog.Put(r.Context(), name, val, r.p.ID)
		val.Zero()
		clear([]byte(*req.Value))
	}
	if err != nil {
		return 0, nil, err
	}
	r.note("version", strconv.FormatUint(meta.Current, 10))
	code := http.StatusOK
	if meta.Current == 1 {
		code = http.StatusCreated
	}
	return code, meta, nil
}

func (s *Server) listSecrets(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	prefix := r.URL.Query().Get("prefix")
	all, err := s.cfg.Catalog.List(r.Context(), prefix)
	if err != nil {
		return 0, nil, err
	}
	out := []catalog.SecretMeta{}
	for _, m := range all {
		if authz.InScope(r.p, m.Name) {
			out = append(out, m)
		}
	}
	return http.StatusOK, out, nil
}

// SecretView is a secret's metadata with its rollout state.
type SecretView struct {
	catalog.SecretMeta
	Holders []broker.Holder `json:"holders"`
	Pending int             `json:"pending"`
}

func (s *Server) showSecret(r *request) (int, any, error) {
	name := r.PathValue("name")
	if err := r.authorize("secret:"+name, name); err != nil {
		return 0, nil, err
	}
	meta, err := s.cfg.Catalog.Show(r.Context(), name)
	if err != nil {
		return 0, nil, err
	}
	v := SecretView{SecretMeta: meta, Holders: []broker.Holder{}}
	if s.cfg.Broker != nil {
		v.Holders = s.cfg.Broker.Rollout(name)
		for _, h := range v.Holders {
			if h.Pending {
				v.Pending++
			}
		}
	}
	return http.StatusOK, v, nil
}

func (s *Server) deleteSecret(r *request) (int, any, error) {
	name := r.PathValue("name")
	if err := r.authorize("secret:"+name, name); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, s.cfg.Catalog.Delete(r.Context(), name)
}
