package aws

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"sync"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/aws/smithy-go"

	"coffer/internal/keystore"
	"coffer/internal/secret"
)

// describeConcurrency bounds the DescribeSecret calls one Check runs at once.
const describeConcurrency = 8

// Keystore is an AWS Secrets Manager upstream.
type Keystore struct {
	name string
	opts keystore.Options
	cfg  Config
	sm   *secretsmanager.Client

	warnOnce sync.Once
}

var _ keystore.Keystore = (*Keystore)(nil)

// New returns a Keystore for cfg (validated). It loads the SDK's shared
// configuration but resolves no credentials and makes no request.
func New(cfg Config, opts keystore.Options) (*Keystore, error) {
	opts = opts.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: keystores.%s: %w", keystore.ErrConfig, opts.Name, err)
	}
	ac, err := LoadSDKConfig(context.Background(), cfg.Region, cfg.Profile, cfg.CAFile, cfg.MaxAttempts, cfg.LoadOptions...)
	if err != nil {
		return nil, fmt.Errorf("%w: keystores.%s: %w", keystore.ErrConfig, opts.Name, err)
	}
	limit := opts.BodyLimit()
	sm := secretsmanager.NewFromConfig(ac, func(o *secretsmanager.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = awssdk.String(cfg.Endpoint)
		}
		o.HTTPClient = keystore.RateDoer(HTTPClient(o.HTTPClient, limit), opts.Limiter)
	})
	return &Keystore{name: opts.Name, opts: opts, cfg: cfg, sm: sm}, nil
}

// LoadSDKConfig loads the SDK's configuration for region, with the default
// credential chain or profile, an extra CA bundle, and a retry limit (0:
// the SDK's default).
func LoadSDKConfig(ctx context.Context, region, profile, caFile string, maxAttempts int, extra ...func(*config.LoadOptions) error) (awssdk.Config, error) {
	lo := []func(*config.LoadOptions) error{config.WithRegion(region)}
	if profile != "" {
		lo = append(lo, config.WithSharedConfigProfile(profile))
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return awssdk.Config{}, fmt.Errorf("ca_file: %w", err)
		}
		lo = append(lo, config.WithCustomCABundle(bytes.NewReader(pem)))
	}
	if maxAttempts > 0 {
		lo = append(lo, config.WithRetryMaxAttempts(maxAttempts))
	}
	return config.LoadDefaultConfig(ctx, append(lo, extra...)...)
}

// Doer is the SDK clients' HTTP client interface.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// HTTPClient wraps an SDK HTTP client: every response body is capped at max
// bytes (see keystore.LimitResponse), and request bodies (small JSON) are
// sent from a buffer of their own. The SDK closes the request body as soon
// as Do returns; when a fast server answers before net/http's write loop has
// made its last read of the body, that read failed and net/http closed the
// connection under the response being read ("use of closed network
// connection"; seen against the local fake under -race).
func HTTPClient(c Doer, max int64) Doer { return limitedClient{c: c, max: max} }

type limitedClient struct {
	c   Doer
	max int64
}

func (l limitedClient) Do(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(b))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
		req.ContentLength = int64(len(b))
	}
	return keystore.LimitResponse(l.c.Do(req))(l.max)
}

// ValidateItem implements keystore.Keystore.
func (k *Keystore) ValidateItem(item string) error { return validateItem(item) }

// Read implements keystore.Keystore.
func (k *Keystore) Read(ctx context.Context, item string) (keystore.Item, error) {
	if err := validateItem(item); err != nil {
		return keystore.Item{}, &keystore.Error{Upstream: k.name, Item: item, Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, k.opts.Timeout)
	defer cancel()
	out, err := k.sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: awssdk.String(item)})
	if err != nil {
		return keystore.Item{}, k.apiError(ctx, item, err)
	}
	var v []byte
	switch {
	case out.SecretString != nil:
		v = []byte(*out.SecretString)
	case out.SecretBinary != nil:
		v = out.SecretBinary
	default:
		return keystore.Item{}, keystore.Errorf(k.name, item, keystore.ErrNotFound, "the current version has no value")
	}
	if len(v) > k.opts.MaxValueSize {
		clear(v)
		return keystore.Item{}, keystore.Errorf(k.name, item, keystore.ErrTooLarge, "%d bytes, more than max_value_size %d", len(v), k.opts.MaxValueSize)
	}
	if out.VersionId == nil {
		clear(v)
		return keystore.Item{}, keystore.Errorf(k.name, item, keystore.ErrUnreachable, "the answer has no VersionId")
	}
	return keystore.Item{Version: *out.VersionId, Value: secret.Value(v)}, nil
}

// Check implements keystore.Keystore.
func (k *Keystore) Check(ctx context.Context, items []string) (map[string]keystore.State, error) {
	out := make(map[string]keystore.State, len(items))
	if len(items) == 0 {
		return out, nil
	}
	var rest []string
	if k.cfg.ChangeDetection == "list" {
		listed, err := k.list(ctx)
		var ae smithy.APIError
		switch {
		case errors.As(err, &ae) && ae.ErrorCode() == "AccessDeniedException":
			k.warnOnce.Do(func() {
				k.opts.Logger.Warn("aws: ListSecrets is not allowed; checking each item with DescribeSecret (grant secretsmanager:ListSecrets to check in one paged call)")
			})
			rest = items
		case err != nil:
			return nil, k.apiError(ctx, "", err)
		default:
			for _, item := range items {
				if st, ok := listed[item]; ok {
					out[item] = k.state(item, st)
				} else {
					rest = append(rest, item)
				}
			}
		}
	} else {
		rest = items
	}
	if err := k.describeAll(ctx, rest, out); err != nil {
		return nil, err
	}
	return out, nil
}

// entry is what a listing or DescribeSecret says of one secret.
type entry struct {
	stages  map[string][]string
	deleted bool
}

func (k *Keystore) state(item string, e entry) keystore.State {
	if e.deleted {
		return keystore.State{Err: keystore.Errorf(k.name, item, keystore.ErrDisabled, "the secret is scheduled for deletion")}
	}
	for id, stages := range e.stages {
		for _, s := range stages {
			if s == "AWSCURRENT" {
				return keystore.State{Version: id}
			}
		}
	}
	return keystore.State{Err: keystore.Errorf(k.name, item, keystore.ErrNotFound, "no version is AWSCURRENT")}
}

// list returns every secret the credentials may list, by name and by ARN.
func (k *Keystore) list(ctx context.Context) (map[string]entry, error) {
	out := map[string]entry{}
	p := secretsmanager.NewListSecretsPaginator(k.sm, &secretsmanager.ListSecretsInput{
		MaxResults: awssdk.Int32(100), IncludePlannedDeletion: awssdk.Bool(true),
	})
	for p.HasMorePages() {
		page, err := k.listPage(ctx, p)
		if err != nil {
			return nil, err
		}
		for _, s := range page.SecretList {
			e := entry{stages: s.SecretVersionsToStages, deleted: s.DeletedDate != nil}
			if s.Name != nil {
				out[*s.Name] = e
			}
			if s.ARN != nil {
				out[*s.ARN] = e
			}
		}
	}
	return out, nil
}

func (k *Keystore) listPage(ctx context.Context, p *secretsmanager.ListSecretsPaginator) (*secretsmanager.ListSecretsOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, k.opts.Timeout)
	defer cancel()
	return p.NextPage(ctx)
}

// describeAll checks items one by one with DescribeSecret. A failure to
// reach AWS at all ends it with one error.
func (k *Keystore) describeAll(ctx context.Context, items []string, out map[string]keystore.State) error {
	if len(items) == 0 {
		return nil
	}
	got, err := keystore.CheckEach(ctx, k.name, items, describeConcurrency, k.describe)
	if err != nil {
		return err
	}
	maps.Copy(out, got)
	return nil
}

// describe returns an item's state; an error only when AWS could not be
// asked at all (then no item can be).
func (k *Keystore) describe(ctx context.Context, item string) (keystore.State, error) {
	if err := validateItem(item); err != nil {
		return keystore.State{Err: &keystore.Error{Upstream: k.name, Item: item, Err: err}}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, k.opts.Timeout)
	defer cancel()
	d, err := k.sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: awssdk.String(item)})
	if err != nil {
		kerr := k.apiError(ctx, item, err)
		var ae smithy.APIError
		if !errors.As(err, &ae) && errors.Is(kerr, keystore.ErrUnreachable) {
			var ke *keystore.Error
			errors.As(kerr, &ke)
			return keystore.State{}, &keystore.Error{Upstream: k.name, Err: ke.Err}
		}
		return keystore.State{Err: kerr}, nil
	}
	return k.state(item, entry{stages: d.VersionIdsToStages, deleted: d.DeletedDate != nil}), nil
}

// apiError classifies an SDK error.
func (k *Keystore) apiError(ctx context.Context, item string, err error) error {
	var (
		nf *types.ResourceNotFoundException
		ae smithy.APIError
	)
	switch {
	case errors.As(err, &nf):
		return keystore.Errorf(k.name, item, keystore.ErrNotFound, "no such secret")
	case errors.As(err, &ae):
		kind := keystore.ErrUnreachable
		switch ae.ErrorCode() {
		case "InvalidRequestException": // for reads: marked for deletion
			kind = keystore.ErrDisabled
		case "DecryptionFailure", "AccessDeniedException", "UnrecognizedClientException", "InvalidClientTokenId",
			"InvalidSignatureException", "SignatureDoesNotMatch", "ExpiredTokenException", "ExpiredToken",
			"IncompleteSignature", "MissingAuthenticationToken", "NotAuthorized":
			kind = keystore.ErrAccessLost
		}
		return keystore.Errorf(k.name, item, kind, "%s: %s", ae.ErrorCode(), keystore.Detail(ae.ErrorMessage()))
	case errors.Is(err, keystore.ErrTooLarge):
		return keystore.Errorf(k.name, item, keystore.ErrTooLarge, "the response is larger than %d bytes", k.opts.BodyLimit())
	case keystore.IsContextError(ctx, err):
		return keystore.Errorf(k.name, item, keystore.ErrUnreachable, "%w", ctx.Err())
	}
	return keystore.Errorf(k.name, item, keystore.TransportError(err), "%s", keystore.Detail(err.Error()))
}

// Close implements keystore.Keystore.
func (k *Keystore) Close() error { return nil }
