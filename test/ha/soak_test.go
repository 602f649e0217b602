package ha

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"coffer/internal/catalog"
)

// Rotations spread over the three servers while servers are killed
// (SIGKILL) and restarted at random, in a bounded loop: at the end every
// container holds the secret's current version, no two writes got the same
// version, and every audit chain verifies.
func TestRotationsWhileServersAreKilled(t *testing.T) {
	const rotations, killEvery = 120, 20
	c := newCluster(t, 3)
	c.put(0, "app/db", "v0")
	c.bind(0, "web-db", "app/db", "app=web")
	var agents []*simAgent
	for i := range 3 {
		a := c.startAgent(fmt.Sprintf("node-%d", i), i, c.addrs())
		for j := range 3 {
			a.startContainer(fmt.Sprintf("c%d-%d", i, j), map[string]string{"app": "web"})
		}
		agents = append(agents, a)
	}
	for _, a := range agents {
		for j := range 3 {
			waitValue(t, a, fmt.Sprintf("%s-%d", "c"+a.name[len("node-"):], j), "db", "v0", 10*time.Second)
		}
	}
	down := -1
	versions := map[uint64]string{}
	rng := rand.New(rand.NewPCG(1, 2))
	for r := 1; r <= rotations; r++ {
		if r%killEvery == 0 {
			if down >= 0 {
				c.start(down)
			}
			down = rng.IntN(3)
			c.servers[down].proc.Kill()
		}
		value := fmt.Sprintf("v%d", r)
		for try := 0; ; try++ {
			i := rng.IntN(3)
			if i == down {
				continue
			}
			code, body := c.api(i, "PUT", "/v1/secrets/app/db", map[string]string{"value": base64.StdEncoding.EncodeToString([]byte(value))})
			if code == http.StatusOK || code == http.StatusCreated {
				var m catalog.SecretMeta
				if err := jsonUnmarshal(body, &m); err != nil {
					t.Fatal(err)
				}
				if old, dup := versions[m.Current]; dup {
					t.Fatalf("version %d given to %s and %s", m.Current, old, value)
				}
				versions[m.Current] = value
				break
			}
			if try > 20 {
				t.Fatalf("rotation %d: %d %s", r, code, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if down >= 0 {
		c.start(down)
	}
	var meta catalog.SecretMeta
	c.must(0, "GET", "/v1/secrets/app/db", nil, &meta)
	want := versions[meta.Current]
	for _, a := range agents {
		for j := range 3 {
			waitValue(t, a, fmt.Sprintf("%s-%d", "c"+a.name[len("node-"):], j), "db", want, 5*time.Second)
		}
	}
	rs, errOut, code := c.verify(1)
	if code != 0 {
		t.Fatalf("audit verify after the kills: exit %d %+v %s", code, rs, errOut)
	}
	t.Logf("%d rotations, %d kills; current version %d everywhere; %d chains verified", rotations, rotations/killEvery, meta.Current, len(rs))
}
