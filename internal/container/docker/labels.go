package docker

import (
	"context"
	"maps"
	"sync"
)

// Docker merges an image's labels into the labels of every container made
// from it (Config.Labels), a `docker run --label` overriding an image label
// of the same key. Labels chosen by an image's author must not pass for the
// operator's: they would let any image claim bindings or opt itself into an
// agent's --only-labels. So the container's own labels are the merged set
// minus the labels its image carries with the same value.

// ownLabels returns the labels of merged (a container's Config.Labels) that
// its image does not carry with the same value: those set by `docker run
// --label`. A label whose key and value are both the image's cannot be told
// apart from the image's and is left out. The result is never nil.
func ownLabels(merged, image map[string]string) map[string]string {
	own := make(map[string]string, len(merged))
	for k, v := range merged {
		if iv, ok := image[k]; ok && iv == v {
			continue
		}
		own[k] = v
	}
	return own
}

// Bounds of the image label cache. Image ids are content addresses, so an
// id's labels never change and entries never go stale; the bounds only cap
// memory, which a hostile image's labels could otherwise inflate.
const (
	imageCacheEntries  = 256
	imageCacheMaxBytes = 64 << 10 // an image whose labels exceed this is not cached
)

// imageLabelCache remembers the labels of images by id, evicting the oldest
// entry when full. It is safe for concurrent use.
type imageLabelCache struct {
	mu    sync.Mutex
	m     map[string]map[string]string
	order []string // insertion order, oldest first
}

// get returns a copy of id's cached labels.
func (c *imageLabelCache) get(id string) (map[string]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ls, ok := c.m[id]
	return maps.Clone(ls), ok
}

// put stores a copy of id's labels unless they are too large.
func (c *imageLabelCache) put(id string, ls map[string]string) {
	size := 0
	for k, v := range ls {
		size += len(k) + len(v)
	}
	if size > imageCacheMaxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]map[string]string{}
	}
	if _, ok := c.m[id]; ok {
		return
	}
	for len(c.order) >= imageCacheEntries {
		delete(c.m, c.order[0])
		c.order[0] = ""
		c.order = c.order[1:]
	}
	c.m[id] = maps.Clone(ls)
	c.order = append(c.order, id)
}

// len is the number of cached images.
func (c *imageLabelCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// imageLabels returns the labels of image id (never nil), from the cache or
// an image inspect. An error that isNotFound means the image is gone.
func (r *Runtime) imageLabels(ctx context.Context, id string) (map[string]string, error) {
	if ls, ok := r.images.get(id); ok {
		return ls, nil
	}
	res, err := r.cli.ImageInspect(ctx, id)
	if err != nil {
		return nil, err
	}
	ls := map[string]string{}
	if res.Config != nil {
		maps.Copy(ls, res.Config.Labels)
	}
	r.images.put(id, ls)
	return ls, nil
}
