package authz

// Rule evaluation. Within a rule from, to and when are ANDed; the entries of
// from (and of to) are ORed; the fields of one source are ANDed; a not-field
// holds when none of its values matches. An absent attribute (no principal
// on a plaintext connection) matches no value, so positive identity fields
// never match plaintext and negative ones always do: Istio's behaviour, see
// https://istio.io/latest/news/security/istio-security-2021-004/ .

func (r *cRule) match(a *attrs) bool {
	if len(r.from) > 0 {
		ok := false
		for i := range r.from {
			if r.from[i].match(a) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(r.to) > 0 {
		ok := false
		for i := range r.to {
			if r.to[i].match(a) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for i := range r.when {
		if !r.when[i].match(a) {
			return false
		}
	}
	return true
}

func (s *cSource) match(a *attrs) bool {
	if s.principals != nil && !anyPattern(s.principals, a.principal) {
		return false
	}
	if s.notPrincipals != nil && anyPattern(s.notPrincipals, a.principal) {
		return false
	}
	if s.namespaces != nil && !anyPattern(s.namespaces, a.ns) {
		return false
	}
	if s.notNamespaces != nil && anyPattern(s.notNamespaces, a.ns) {
		return false
	}
	if s.sas != nil && !anySA(s.sas, a.ns, a.sa) {
		return false
	}
	if s.notSAs != nil && anySA(s.notSAs, a.ns, a.sa) {
		return false
	}
	if s.ips != nil && !anyPrefix(s.ips, a.srcIP) {
		return false
	}
	if s.notIPs != nil && anyPrefix(s.notIPs, a.srcIP) {
		return false
	}
	return true
}

func (o *cOperation) match(a *attrs) bool {
	if o.ports != nil && !anyPort(o.ports, a.dstPort) {
		return false
	}
	if o.notPorts != nil && anyPort(o.notPorts, a.dstPort) {
		return false
	}
	return true
}

func (c *cCondition) match(a *attrs) bool {
	switch c.key {
	case condSourceIP, condDestinationIP:
		ip := a.srcIP
		if c.key == condDestinationIP {
			ip = a.dstIP
		}
		if c.hasValues && !anyPrefix(c.ips, ip) {
			return false
		}
		return !c.hasNotVs || !anyPrefix(c.notIPs, ip)
	case condDestinationPort:
		if c.hasValues && !anyPort(c.ports, a.dstPort) {
			return false
		}
		return !c.hasNotVs || !anyPort(c.notPorts, a.dstPort)
	default:
		v := a.principal
		if c.key == condSourceNamespace {
			v = a.ns
		}
		if c.hasValues && !anyPattern(c.strs, v) {
			return false
		}
		return !c.hasNotVs || !anyPattern(c.notStrs, v)
	}
}
