package config

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// maxFileSize bounds what Validate reads of the token and bundle files.
const maxFileSize = 4 << 20

// checkFile reads path (at most maxFileSize bytes) and hands the content to
// check; a missing, unreadable, non-regular, oversized or rejected file is a
// UsageError that never quotes the content.
func (c Config) checkFile(flagName, path string, check func([]byte) string) error {
	if path == "" {
		return c.bad(flagName, path, "required", nil)
	}
	// Stat before opening: opening a FIFO would block start-up until a
	// writer appears, and a device could be read forever.
	st, err := os.Stat(path)
	if err != nil {
		return c.bad(flagName, path, fileReason(err), err)
	}
	if !st.Mode().IsRegular() {
		return c.bad(flagName, path, "not a regular file", nil)
	}
	f, err := os.Open(path)
	if err != nil {
		return c.bad(flagName, path, fileReason(err), err)
	}
	defer func() { _ = f.Close() }()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return c.bad(flagName, path, fileReason(err), err)
	}
	if len(data) > maxFileSize {
		return c.bad(flagName, path, fmt.Sprintf("larger than %d bytes", maxFileSize), nil)
	}
	if reason := check(data); reason != "" {
		return c.bad(flagName, path, reason, nil)
	}
	return nil
}

func fileReason(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file"
	case errors.Is(err, fs.ErrPermission):
		return "not readable: permission denied"
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return "not readable: " + pe.Err.Error()
	}
	return "not readable: " + err.Error()
}

// checkToken accepts any non-blank token: its validity is the CA's to judge.
func checkToken(data []byte) string {
	for _, b := range data {
		if b > ' ' {
			return ""
		}
	}
	return "is empty"
}

// checkBundle wants at least one PEM CERTIFICATE block, and every such block
// to parse.
func checkBundle(data []byte) string {
	n := 0
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		n++
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Sprintf("certificate %d does not parse: %v", n, err)
		}
	}
	if n == 0 {
		return "holds no PEM certificate"
	}
	return ""
}
