//go:build linux

package cluster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"time"
)

// ServiceAccountIssuer is the issuer (and default audience) of the cluster's
// ServiceAccount tokens.
const ServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local"

// APIServerPort is the secure port kube-apiserver listens on, on the host
// bridge address.
const APIServerPort = 6443

// freePort returns a TCP port free on addr at the time of the call.
func freePort(addr string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	cp, err := freePort("127.0.0.1")
	if err != nil {
		return err
	}
	pp, err := freePort("127.0.0.1")
	if err != nil {
		return err
	}
	client := "http://127.0.0.1:" + strconv.Itoa(cp)
	peer := "http://127.0.0.1:" + strconv.Itoa(pp)
	p, err := c.start(procSpec{name: "etcd", path: c.bin("etcd"), args: []string{
		"--name=e2e",
		"--data-dir=" + filepath.Join(c.WorkDir, "etcd"),
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=e2e=" + peer,
		"--unsafe-no-fsync", // a throw-away cluster: no need to wait for the disk
		"--log-level=warn",
	}})
	if err != nil {
		return err
	}
	c.etcdURL = client
	hc := &http.Client{Timeout: 2 * time.Second}
	return waitFor(ctx, "etcd health", 100*time.Millisecond, []*proc{p}, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, client+"/health", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd /health: %s", resp.Status)
		}
		return nil
	})
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	ip := c.net.hostIP.String()
	svcIP := nthIP(c.serviceCIDR, 1)
	serving, err := c.pki.issue("apiserver", "kube-apiserver", nil,
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		[]net.IP{c.net.hostIP, svcIP, net.IPv4(127, 0, 0, 1)}, true)
	if err != nil {
		return err
	}
	kubeletClient, err := c.pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil, nil, false)
	if err != nil {
		return err
	}
	p, err := c.start(procSpec{name: "kube-apiserver", path: c.bin("kube-apiserver"), args: []string{
		"--etcd-servers=" + c.etcdURL,
		"--bind-address=" + ip,
		"--advertise-address=" + ip,
		"--secure-port=" + strconv.Itoa(APIServerPort),
		"--cert-dir=" + filepath.Join(c.WorkDir, "apiserver"),
		"--tls-cert-file=" + serving.Cert,
		"--tls-private-key-file=" + serving.Key,
		"--client-ca-file=" + c.pki.CAFile,
		"--service-account-issuer=" + ServiceAccountIssuer,
		"--service-account-key-file=" + c.saPub,
		"--service-account-signing-key-file=" + c.saKey,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--service-cluster-ip-range=" + c.serviceCIDR.String(),
		"--kubelet-client-certificate=" + kubeletClient.Cert,
		"--kubelet-client-key=" + kubeletClient.Key,
		"--kubelet-preferred-address-types=InternalIP",
		"--profiling=false",
		"--v=1",
	}})
	if err != nil {
		return err
	}
	c.apiserver = p
	return waitFor(ctx, "kube-apiserver /readyz", 200*time.Millisecond, []*proc{p}, func(ctx context.Context) error {
		cs, err := c.clientsetErr()
		if err != nil {
			return err
		}
		b, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("%w: %s", err, b)
		}
		return nil
	})
}

// startControllers starts kube-controller-manager (ServiceAccounts, tokens'
// root CA, Deployments, DaemonSets, node pod CIDRs) and kube-scheduler.
func (c *Cluster) startControllers() error {
	kcm, err := c.componentKubeconfig("kube-controller-manager", "system:kube-controller-manager", nil)
	if err != nil {
		return err
	}
	if _, err := c.start(procSpec{name: "kube-controller-manager", path: c.bin("kube-controller-manager"), args: []string{
		"--kubeconfig=" + kcm,
		"--authentication-kubeconfig=" + kcm,
		"--authorization-kubeconfig=" + kcm,
		"--bind-address=127.0.0.1",
		"--secure-port=0",
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + c.saKey,
		"--root-ca-file=" + c.pki.CAFile,
		"--cluster-signing-cert-file=" + c.pki.CAFile,
		"--cluster-signing-key-file=" + filepath.Join(c.pki.dir, "ca.key"),
		"--allocate-node-cidrs=true",
		"--cluster-cidr=" + c.podCIDR.String(),
		"--node-cidr-mask-size=24",
		"--service-cluster-ip-range=" + c.serviceCIDR.String(),
		"--v=1",
	}}); err != nil {
		return err
	}
	sched, err := c.componentKubeconfig("kube-scheduler", "system:kube-scheduler", nil)
	if err != nil {
		return err
	}
	_, err = c.start(procSpec{name: "kube-scheduler", path: c.bin("kube-scheduler"), args: []string{
		"--kubeconfig=" + sched,
		"--authentication-kubeconfig=" + sched,
		"--authorization-kubeconfig=" + sched,
		"--bind-address=127.0.0.1",
		"--secure-port=0",
		"--leader-elect=false",
		"--v=1",
	}})
	return err
}

// componentKubeconfig issues a client certificate for user (in groups) and
// writes a kubeconfig for it, returning its path.
func (c *Cluster) componentKubeconfig(name, user string, groups []string) (string, error) {
	cert, err := c.pki.issue(name, user, groups, nil, nil, false)
	if err != nil {
		return "", err
	}
	path := filepath.Join(c.WorkDir, "kubeconfig", name)
	return path, writeKubeconfig(path, c.APIServerURL, c.pki.CAFile, cert)
}
