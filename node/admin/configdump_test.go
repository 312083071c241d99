package admin

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/ambit-mesh/ambit/identity"
	"github.com/ambit-mesh/ambit/identity/identitytest"
)

// TestConfigDumpCertificatesHaveNoKeys runs a real identity.Manager with
// the test CA, obtains a certificate (so the Manager holds its private
// key), and checks /config_dump shows the certificate but nothing of the
// key: no PEM block, no DER, no scalar in any common encoding.
func TestConfigDumpCertificatesHaveNoKeys(t *testing.T) {
	ca := identitytest.MustCA("cluster.local")
	mgr, err := identity.NewManager(identity.ManagerConfig{
		Provider: identity.CSRProvider{Signer: &identitytest.FakeSigner{CA: ca}},
		Bundle:   ca.Bundle(),
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Close()
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/frontend")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	svid, err := mgr.GetX509SVIDFor(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	key := svid.PrivateKey.(*ecdsa.PrivateKey)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	scalar, err := key.Bytes()
	if err != nil {
		t.Fatal(err)
	}

	d := NewConfigDump()
	d.Register("certificates", CertificatesSection(mgr))
	d.Register("workloads", func() any { return []string{"shop/frontend-1"} })
	srv, err := New(Config{Level: new(slog.LevelVar), ConfigDump: d, Addr: "127.0.0.1:15000"})
	if err != nil {
		t.Fatal(err)
	}
	code, body := do(t, "GET", serve(t, srv.Handler())+"/config_dump")
	if code != 200 {
		t.Fatalf("config_dump: %d %s", code, body)
	}
	var dump struct {
		Certificates []identity.CertInfo `json:"certificates"`
		Workloads    []string            `json:"workloads"`
	}
	if err := json.Unmarshal([]byte(body), &dump); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, body)
	}
	if len(dump.Certificates) != 1 || dump.Certificates[0].ID != id.String() || !dump.Certificates[0].Usable ||
		dump.Certificates[0].Serial != svid.Certificates[0].SerialNumber.Text(16) {
		t.Fatalf("certificates section = %+v, want the one usable certificate", dump.Certificates)
	}
	if len(dump.Workloads) != 1 {
		t.Fatalf("workloads section = %v", dump.Workloads)
	}
	lower := strings.ToLower(body)
	for name, s := range map[string]string{
		"PEM label":        "PRIVATE KEY",
		"PEM of the key":   string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))[28:80],
		"PKCS#8 base64":    base64.StdEncoding.EncodeToString(der)[:40],
		"SEC1 base64":      base64.StdEncoding.EncodeToString(ecDER)[:40],
		"scalar hex":       hex.EncodeToString(scalar),
		"scalar base64":    base64.StdEncoding.EncodeToString(scalar),
		"scalar base64url": base64.RawURLEncoding.EncodeToString(scalar),
		"scalar decimal":   new(big.Int).SetBytes(scalar).String(),
		"raw scalar bytes": string(scalar),
	} {
		if strings.Contains(body, s) || strings.Contains(lower, strings.ToLower(s)) {
			t.Errorf("config_dump contains the key (%s)", name)
		}
	}
}

func TestConfigDumpInclude(t *testing.T) {
	d := NewConfigDump()
	d.Register("pools", func() any { return map[string]int{"10.0.0.1:15008": 2} })
	d.Register("policies", func() any { return []string{"pay/allow-shop"} })
	srv, err := New(Config{Level: new(slog.LevelVar), ConfigDump: d})
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, srv.Handler())
	code, body := do(t, "GET", base+"/config_dump?include=pools")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if _, ok := got["pools"]; !ok || len(got) != 1 {
		t.Fatalf("include=pools gave %v", got)
	}
	code, body = do(t, "GET", base+"/config_dump?include=pools,nope")
	if code != 400 || !strings.Contains(body, "nope") || !strings.Contains(body, "policies") {
		t.Fatalf("unknown section: %d %q, want 400 naming it and the known ones", code, body)
	}
}
