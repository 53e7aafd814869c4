# ratios.awk reads 'go test -bench' output and prints, per case, the
# median ns/op over the -count runs, and the ratios oauthfs/floor and
# oauthfs/tmpfs (and client/embedded when present).
/^BenchmarkOpenReadClose\// {
	name = $1; sub(/^BenchmarkOpenReadClose\//, "", name); sub(/-[0-9]+$/, "", name)
	n[name]++; v[name, n[name]] = $3
}
/^BenchmarkSave\// {
	name = $1; sub(/^BenchmarkSave\//, "save/", name); sub(/-[0-9]+$/, "", name)
	n[name]++; v[name, n[name]] = $3
}
function median(name,   i, j, t, k) {
	k = n[name]
	for (i = 1; i <= k; i++) a[i] = v[name, i]
	for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
}
END {
	for (name in n) { m[name] = median(name); printf "%-22s median %9.0f ns/op over %d runs\n", name, m[name], n[name] }
	e = m["oauthfs/guid"]; c = m["client/guid"]
	if (m["floor"] > 0 && e > 0) printf "oauthfs/floor   = %.2f  (target <= 1.20)\n", e / m["floor"]
	if (m["tmpfs"] > 0 && e > 0) printf "oauthfs/tmpfs   = %.1f\n", e / m["tmpfs"]
	if (m["floor"] > 0 && m["oauthfs/by-name"] > 0) printf "by-name/floor   = %.2f\n", m["oauthfs/by-name"] / m["floor"]
	if (c > 0 && e > 0) printf "client/embedded = %.2f  (target <= 1.30)\n", c / e
	split("put refresh", kinds, " ")
	for (i in kinds) {
		k = kinds[i]; base = m["save/" k "/creds=10"]
		if (base > 0) printf "save: %-7s 1000/10 = %.2f  5000/10 = %.2f  (flat: about 1)\n", k, m["save/" k "/creds=1000"] / base, m["save/" k "/creds=5000"] / base
	}
}
