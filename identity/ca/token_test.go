package ca

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func jwtOf(t *testing.T, header, claims any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return enc(header) + "." + enc(claims) + "." + base64.RawURLEncoding.EncodeToString([]byte("sig"))
}

func TestPrecheckToken(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	rs := map[string]string{"alg": "RS256"}
	sub := "system:serviceaccount:ambit-system:ambit"
	good := map[string]any{"aud": []string{"api", "ambit-ca"}, "exp": now.Unix() + 600, "sub": sub}
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for kk, vv := range good {
			m[kk] = vv
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	for _, c := range []struct {
		name  string
		token string
		want  Reason // "" accepted
	}{
		{"good", jwtOf(t, rs, good), ""},
		{"aud as a string", jwtOf(t, rs, with("aud", "ambit-ca")), ""},
		{"exp as a float", jwtOf(t, rs, with("exp", float64(now.Unix()+600)+0.5)), ""},
		{"two parts", "a.b", ReasonTokenMalformed},
		{"four parts", jwtOf(t, rs, good) + ".x", ReasonTokenMalformed},
		{"empty signature", strings.TrimSuffix(jwtOf(t, rs, good), "c2ln"), ReasonTokenMalformed},
		{"signature not base64url", jwtOf(t, rs, good) + "!", ReasonTokenMalformed},
		{"header not JSON", "bm90LWpzb24." + strings.SplitN(jwtOf(t, rs, good), ".", 2)[1], ReasonTokenMalformed},
		{"alg none", jwtOf(t, map[string]string{"alg": "none"}, good), ReasonTokenMalformed},
		{"alg NONE", jwtOf(t, map[string]string{"alg": "NONE"}, good), ReasonTokenMalformed},
		{"no alg", jwtOf(t, map[string]string{"typ": "JWT"}, good), ReasonTokenMalformed},
		{"claims not an object", jwtOf(t, rs, []int{1}), ReasonTokenMalformed},
		{"no exp", jwtOf(t, rs, with("exp", nil)), ReasonTokenMalformed},
		{"exp a string", jwtOf(t, rs, with("exp", "soon")), ReasonTokenMalformed},
		{"exp negative", jwtOf(t, rs, with("exp", -5)), ReasonTokenMalformed},
		{"exp absurd", jwtOf(t, rs, with("exp", 1e300)), ReasonTokenMalformed},
		{"expired", jwtOf(t, rs, with("exp", now.Unix()-1)), ReasonTokenExpired},
		{"expiring now", jwtOf(t, rs, with("exp", now.Unix())), ReasonTokenExpired},
		{"no aud", jwtOf(t, rs, with("aud", nil)), ReasonTokenAudience},
		{"other aud", jwtOf(t, rs, with("aud", []string{"api"})), ReasonTokenAudience},
		{"aud a number", jwtOf(t, rs, with("aud", 7)), ReasonTokenMalformed},
		{"other subject", jwtOf(t, rs, with("sub", "system:serviceaccount:shop:web")), ReasonWrongServiceAccount},
		{"no subject", jwtOf(t, rs, with("sub", nil)), ReasonWrongServiceAccount},
		{"too long", jwtOf(t, rs, with("pad", strings.Repeat("x", DefaultMaxTokenBytes))), ReasonTokenMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			exp, err := precheckToken(c.token, DefaultMaxTokenBytes, []string{"ambit-ca"}, sub, now)
			if c.want == "" {
				if err != nil || !exp.After(now) {
					t.Fatalf("refused: %v (exp %v)", err, exp)
				}
				return
			}
			if got := ReasonOf(err); err == nil || got != c.want {
				t.Fatalf("got %v (%s), want %s", err, got, c.want)
			}
		})
	}
}
