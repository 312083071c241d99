package cniplugin

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/ambit-mesh/ambit/redirect/cnimsg"
	"golang.org/x/sys/unix"
)

// ErrUnreachable: the daemon's socket could not be reached.
var ErrUnreachable = errors.New("ambit-cni: node daemon unreachable")

// Call sends one request (with the netns at netnsPath as a descriptor
// when given) and waits for the answer. A response that is not OK is an
// error carrying the daemon's reason.
func Call(socket string, req cnimsg.Request, netnsPath string, timeout time.Duration) (*cnimsg.Response, error) {
	frame, err := cnimsg.Encode(cnimsg.TypeRequest, req)
	if err != nil {
		return nil, err
	}
	var oob []byte
	if netnsPath != "" {
		ns, err := os.Open(netnsPath)
		if err != nil {
			return nil, fmt.Errorf("ambit-cni: open netns: %w", err)
		}
		defer ns.Close()
		oob = unix.UnixRights(int(ns.Fd()))
	}
	c, err := net.DialTimeout("unixpacket", socket, timeout)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	uc.SetDeadline(time.Now().Add(timeout))
	if _, _, err := uc.WriteMsgUnix(frame, oob, nil); err != nil {
		return nil, fmt.Errorf("%w: send: %w", ErrUnreachable, err)
	}
	var resp cnimsg.Response
	buf := make([]byte, cnimsg.HeaderLen+cnimsg.MaxPayload)
	n, err := uc.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("ambit-cni: no answer from the node daemon: %w", err)
	}
	if err := cnimsg.Read(bytes.NewReader(buf[:n]), cnimsg.TypeResponse, &resp); err != nil {
		return nil, fmt.Errorf("ambit-cni: bad answer: %w", err)
	}
	if !resp.OK {
		return &resp, fmt.Errorf("ambit-cni: node daemon refused %s of %s: %s", req.Op, req.Pod.ContainerID, resp.Error)
	}
	return &resp, nil
}
