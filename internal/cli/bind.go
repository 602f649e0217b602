package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"coffer/internal/policy"
)

func newBindCmd(c *conn) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bind",
		Short: "Bind secrets to containers by label selector (and image, and host)",
	}
	cmd.AddCommand(newBindCreateCmd(c), newBindLsCmd(c), newBindRmCmd(c), newBindTestCmd(c))
	return cmd
}

func newBindCreateCmd(c *conn) *cobra.Command {
	var b policy.Binding
	var mode string
	cmd := &cobra.Command{
		Use:   "create NAME --secret S --selector SEL",
		Short: "Create or replace a binding",
		Long: `Create or replace a binding: every container whose labels match the selector
(Kubernetes syntax: app=web, env in (prod,staging), !debug, tier; comma = and),
whose image, if given, matches --image (repository glob, :tag, or
@sha256:digest), and whose host, if given, matches --hosts (a selector over the
labels an admin gave the host's agent at enrollment) receives the secret as a
file under /run/secrets/. Running containers that match receive it at once.

The selector sees the container's own labels (docker run --label), not its
image's. Keys under the reserved prefix image.label/ name the image's labels
instead (image.label/app=payments); container labels with that prefix are
ignored. Image labels are chosen by the image's author, so a selector that uses
them needs an --image that names the images it trusts: a digest, or a literal
registry and first path segment (registry.example.com/team/*, not ** or **/app).`,
		Example: `  coffer bind create web-db --secret payments/db-password --selector 'app=web,env in (prod,staging)' --hosts 'env=prod'
  coffer bind create api-key --secret payments/api-key --selector app=api --image 'registry.example.com/api:*' --file key --mode 0440 --gid 1000
  coffer bind create pay-img --secret payments/api-key --selector 'image.label/app=payments' --image 'registry.example.com/pay/*'`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b.Name = args[0]
			if b.Secret == "" || b.Selector == "" {
				return usageError(fmt.Errorf("--secret and --selector are required"))
			}
			if mode != "" {
				m, err := strconv.ParseUint(mode, 8, 32)
				if err != nil {
					return usageError(fmt.Errorf("--mode %q: an octal mode such as 0400", mode))
				}
				b.Mode = uint32(m)
			}
			check := b
			if err := check.Normalize(); err != nil {
				return usageError(err)
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			var out policy.Binding
			if err := cl.do("PUT", "/v1/bindings/"+escapePath(b.Name), b, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "binding %s: %s → /run/secrets/%s (mode %04o, uid %d, gid %d) for %s\n", out.Name, out.Secret, out.File, out.Mode, out.UID, out.GID, describe(out))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&b.Secret, "secret", "", "secret to deliver (required)")
	f.StringVar(&b.Selector, "selector", "", "label selector (required)")
	f.StringVar(&b.Image, "image", "", "image pattern: repository glob with optional :tag, or @sha256:digest")
	f.StringVar(&b.Hosts, "hosts", "", "label selector over the host's (agent's) labels (default: any host)")
	f.StringVar(&b.File, "file", "", "file name under /run/secrets (default: the secret's last path element)")
	f.StringVar(&mode, "mode", "", "file mode, octal (default 0400)")
	f.IntVar(&b.UID, "uid", 0, "file owner uid")
	f.IntVar(&b.GID, "gid", 0, "file group gid")
	return cmd
}

func describe(b policy.Binding) string {
	s := "containers with " + b.Selector
	if b.Image != "" {
		s += " and image " + b.Image
	}
	if b.Hosts != "" {
		s += " on hosts with " + b.Hosts
	}
	return s
}

func newBindLsCmd(c *conn) *cobra.Command {
	var o output
	cmd := &cobra.Command{
		Use:     "ls",
		Short:   "List bindings",
		Example: "  coffer bind ls\n  coffer bind ls -o json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var bs []policy.Binding
			if err := c.get(&o, "/v1/bindings", &bs); err != nil {
				return err
			}
			rows := [][]string{}
			for _, b := range bs {
				rows = append(rows, []string{b.Name, b.Secret, b.Selector, dash(b.Image), dash(b.Hosts), b.File, fmt.Sprintf("%04o", b.Mode), fmt.Sprintf("%d:%d", b.UID, b.GID)})
			}
			return o.print(cmd.OutOrStdout(), bs, []string{"NAME", "SECRET", "SELECTOR", "IMAGE", "HOSTS", "FILE", "MODE", "OWNER"}, rows)
		},
	}
	o.flag(cmd)
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newBindRmCmd(c *conn) *cobra.Command {
	return deleteCmd(c, "rm NAME", "Delete a binding; its file disappears from the containers it served",
		"  coffer bind rm web-db", "/v1/bindings/", "binding %s: deleted\n")
}

func newBindTestCmd(c *conn) *cobra.Command {
	var o output
	var labels, hostLabels, imageLabels, image, digest string
	cmd := &cobra.Command{
		Use:   "test --labels k=v,... [--host-labels k=v,...] [--image-labels k=v,...] [--image REF]",
		Short: "Show which secrets a container with these labels and image would get on a host with these labels",
		Long: `Show which secrets a container would get: --labels are its own labels,
--image-labels its image's labels (what image.label/ keys in selectors see),
--host-labels the labels of the host's agent. Without --host-labels the host
has no labels, so bindings whose host selector requires one do not match.`,
		Example: `  coffer bind test --labels app=web,env=prod --image registry/x:1.2
  coffer bind test --labels app=web --host-labels env=prod,zone=eu-1
  coffer bind test --image-labels app=payments --image registry.example.com/pay/api:1.2
  coffer bind test --labels app=web -o json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			lm, err := parseLabels(labels)
			if err != nil {
				return usageError(err)
			}
			hm, err := policy.ParseLabels(hostLabels)
			if err != nil {
				return usageError(fmt.Errorf("--host-labels: %w", err))
			}
			im, err := policy.ParseLabels(imageLabels)
			if err != nil {
				return usageError(fmt.Errorf("--image-labels: %w", err))
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			var gs []policy.Grant
			req := map[string]any{"labels": lm, "host_labels": hm, "image_labels": im, "image": image, "image_digest": digest}
			if err := cl.do("POST", "/v1/evaluate", req, &gs); err != nil {
				return err
			}
			rows := [][]string{}
			for _, g := range gs {
				rows = append(rows, []string{g.Secret, "/run/secrets/" + g.File, g.Binding})
			}
			return o.print(cmd.OutOrStdout(), gs, []string{"SECRET", "FILE", "BINDING"}, rows)
		},
	}
	cmd.Flags().StringVar(&labels, "labels", "", "container labels, k=v,k2=v2")
	cmd.Flags().StringVar(&hostLabels, "host-labels", "", "labels of the host's agent, k=v,k2=v2 (default: none)")
	cmd.Flags().StringVar(&imageLabels, "image-labels", "", "labels of the container's image, k=v,k2=v2 (default: none)")
	cmd.Flags().StringVar(&image, "image", "", "container image reference")
	cmd.Flags().StringVar(&digest, "image-digest", "", "container image digest (sha256:...)")
	o.flag(cmd)
	return cmd
}

func parseLabels(s string) (map[string]string, error) {
	m := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return m, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("--labels: %q is not key=value", kv)
		}
		m[k] = strings.TrimSpace(v)
	}
	return m, nil
}
