// Package localkms tests Coffer's AWS KMS master key (internal/seal/awskms)
// against local-kms (github.com/nsmithuk/local-kms), an AWS KMS emulator,
// run in-process on 127.0.0.1: its own binary listens on every interface,
// so it is never run. local-kms pulls in the AWS SDK v1 and goleveldb,
// hence this separate module, which keeps them out of Coffer's go.mod.
//
//	cd test/localkms && CGO_ENABLED=1 go test -race ./...
package localkms

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	lkms "github.com/nsmithuk/local-kms/src"
	lconfig "github.com/nsmithuk/local-kms/src/config"
	"github.com/nsmithuk/local-kms/src/data"

	"coffer/internal/seal"
	"coffer/internal/seal/awskms"
	"coffer/internal/seal/sealtest"
)

const region = "eu-west-1"

// start serves local-kms's handler on 127.0.0.1 and returns its URL and an
// admin client for setting up keys.
func start(t *testing.T) (string, *kms.Client) {
	t.Helper()
	lconfig.AWSRegion, lconfig.AWSAccountId = region, "111122223333"
	db := data.NewDatabase(filepath.Join(t.TempDir(), "db"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { lkms.HandleRequest(w, r, db) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close(); db.Close() })
	url := "http://" + ln.Addr().String()
	cfg, err := config.LoadDefaultConfig(context.Background(), testOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	return url, kms.NewFromConfig(cfg, func(o *kms.Options) { o.BaseEndpoint = aws.String(url) })
}

func testOptions() []func(*config.LoadOptions) error {
	return []func(*config.LoadOptions) error{
		config.WithRegion(region),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDLOCALKMS", "secret", "")),
		config.WithSharedConfigFiles([]string{}), config.WithSharedCredentialsFiles([]string{}),
	}
}

func createKey(t *testing.T, admin *kms.Client, alias string) string {
	t.Helper()
	out, err := admin.CreateKey(context.Background(), &kms.CreateKeyInput{Description: aws.String("coffer test " + alias)})
	if err != nil {
		t.Fatal(err)
	}
	if alias != "" {
		if _, err := admin.CreateAlias(context.Background(), &kms.CreateAliasInput{AliasName: aws.String("alias/" + alias), TargetKeyId: out.KeyMetadata.KeyId}); err != nil {
			t.Fatal(err)
		}
	}
	return *out.KeyMetadata.Arn
}

func wrapper(t *testing.T, url, keyID, installation string) *awskms.Wrapper {
	t.Helper()
	w, err := awskms.New(awskms.Config{Region: region, Endpoint: url, KeyID: keyID, Installation: installation,
		LoadOptions: testOptions(), MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestSuiteOtherKey(t *testing.T) {
	url, admin := start(t)
	createKey(t, admin, "coffer")
	other := createKey(t, admin, "")
	sealtest.Run(t, wrapper(t, url, "alias/coffer", "prod-eu"), wrapper(t, url, other, "prod-eu"))
}

// TestSuiteOtherInstallation: the same KMS key, another installation name
// in the encryption context, is another master key.
func TestSuiteOtherInstallation(t *testing.T) {
	url, admin := start(t)
	arn := createKey(t, admin, "")
	sealtest.Run(t, wrapper(t, url, arn, "prod-eu"), wrapper(t, url, arn, "staging"))
}

func TestWrongContextIsDecryptError(t *testing.T) {
	ctx := context.Background()
	url, admin := start(t)
	arn := createKey(t, admin, "")
	w := wrapper(t, url, arn, "prod-eu")
	dek := make([]byte, seal.DEKSize)
	wrapped, err := w.Wrap(ctx, dek)
	if err != nil {
		t.Fatal(err)
	}
	// What KMS itself says when the context differs (the blob sits between
	// the format byte and the tag).
	blob := wrapped[1 : len(wrapped)-16]
	_, err = admin.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob, EncryptionContext: map[string]string{"coffer:installation": "other"}})
	var ice *types.InvalidCiphertextException
	if !errors.As(err, &ice) {
		t.Fatalf("KMS Decrypt with another context: %v, want InvalidCiphertextException", err)
	}
	if _, err := wrapper(t, url, arn, "other").Unwrap(ctx, wrapped); !errors.Is(err, seal.ErrDecrypt) || !strings.Contains(err.Error(), `"other"`) {
		t.Fatalf("Unwrap for another installation: %v, want ErrDecrypt naming it", err)
	}
}

// TestDeletedKey: once the key is scheduled for deletion nothing unwraps,
// and Open reports it as a decrypt failure.
func TestDeletedKey(t *testing.T) {
	ctx := context.Background()
	url, admin := start(t)
	arn := createKey(t, admin, "")
	w := wrapper(t, url, arn, "prod-eu")
	env, err := seal.Seal(ctx, w, []byte("v"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(arn), PendingWindowInDays: aws.Int32(7)}); err != nil {
		t.Fatal(err)
	}
	if _, err := seal.Open(ctx, w, env, nil); !errors.Is(err, seal.ErrDecrypt) {
		t.Fatalf("Open after the key was scheduled for deletion: %v", err)
	}
	if _, err := w.Wrap(ctx, make([]byte, 32)); err == nil {
		t.Fatal("Wrap with a key pending deletion succeeded")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []awskms.Config{
		{Region: region, Installation: "prod"},
		{Region: region, KeyID: "alias/x"},
		{Region: region, KeyID: "alias/x", Installation: "has space"},
		{Region: "x", KeyID: "alias/x", Installation: "prod"},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) accepted", c)
		}
	}
}
