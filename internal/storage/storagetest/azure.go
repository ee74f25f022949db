package storagetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

// The Azurite account; tests set it in the standard Azure environment, and
// the coordinator's log must never show the key.
const (
	AzureAccount = "framefarmtest"
	// AzureKey is the account's key, base64 as Azure gives keys (of
	// "az-s3cr3t-never-logged-41c8e2").
	AzureKey = "YXotczNjcjN0LW5ldmVyLWxvZ2dlZC00MWM4ZTI="
)

// Azurite is a running Azurite blob service on loopback.
type Azurite struct {
	// Addr is host:port on loopback.
	Addr string
	out  *lockedBuffer
}

// StartAzurite starts Azurite's blob service (AZURITE_BLOB names the
// binary, by default bin/azurite-blob) with one account of its own and the
// given containers, and sets AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY so
// gocloud's azureblob signs with the shared key (and clears the other
// Azure credentials it would prefer or fall back to). The emulator's
// endpoint goes in each URL (see URL), since azureblob reads its
// environment once per process.
func StartAzurite(t testing.TB, containers ...string) *Azurite {
	t.Helper()
	bin := emulator(t, "AZURITE_BLOB", "azurite-blob")
	addr := loopbackAddr(t)
	port := addr[strings.LastIndex(addr, ":")+1:]
	a := &Azurite{Addr: addr, out: &lockedBuffer{}}
	// --skipApiVersionCheck: the Go SDK may speak a newer API version than
	// the pinned Azurite; --disableTelemetry: the tests talk to loopback only.
	cmd := exec.Command(bin, "--blobHost", "127.0.0.1", "--blobPort", port, "--location", t.TempDir(),
		"--skipApiVersionCheck", "--disableTelemetry", "--silent")
	cmd.Env = append(os.Environ(), "AZURITE_ACCOUNTS="+AzureAccount+":"+AzureKey)
	run(t, "azurite", cmd, addr, a.out)
	t.Setenv("AZURE_STORAGE_ACCOUNT", AzureAccount)
	t.Setenv("AZURE_STORAGE_KEY", AzureKey)
	for _, k := range []string{"AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGEBLOB_CONNECTIONSTRING",
		"AZURE_STORAGE_DOMAIN", "AZURE_STORAGE_PROTOCOL", "AZURE_STORAGE_IS_LOCAL_EMULATOR", "AZURE_STORAGE_IS_CDN"} {
		t.Setenv(k, "")
	}
	for _, c := range containers {
		a.MakeContainer(t, c)
	}
	return a
}

// MakeContainer creates a container with the account's shared key.
func (a *Azurite) MakeContainer(t testing.TB, name string) {
	t.Helper()
	cred, err := azblob.NewSharedKeyCredential(AzureAccount, AzureKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := container.NewClientWithSharedKeyCredential(fmt.Sprintf("http://%s/%s/%s", a.Addr, AzureAccount, name), cred, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(context.Background(), nil); err != nil {
		t.Fatalf("creating container %s: %v", name, err)
	}
}

// URL is a storage URL on this server:
// azblob://container/key?domain=127.0.0.1:PORT&protocol=http&localemu=true.
func (a *Azurite) URL(container, key string) string {
	return fmt.Sprintf("azblob://%s/%s?domain=%s&protocol=http&localemu=true", container, key, a.Addr)
}

// Output is what the server printed so far.
func (a *Azurite) Output() string { return a.out.String() }
