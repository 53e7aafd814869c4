# ratios.awk reads 'go test -bench' output and prints the table of
# docs/performance.md: per figure, the ratio of the medians over the
# -count runs (or the median of a reported metric), and its target.
/^Benchmark/ {
	name = $1; sub(/^Benchmark/, "", name); sub(/-[0-9]+$/, "", name)
	n[name]++; v[name, "ns/op", n[name]] = $3
	for (i = 5; i + 1 <= NF; i += 2) { v[name, $(i + 1), n[name]] = $i; units[name, $(i + 1)] = 1 }
}
function median(name, unit,   i, j, t, k, a) {
	k = n[name]
	if (k == 0) return 0
	for (i = 1; i <= k; i++) a[i] = v[name, unit, i]
	for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
	return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
}
function ratio(label, num, den, target,   x, y) {
	x = median(num, "ns/op"); y = median(den, "ns/op")
	if (x > 0 && y > 0) printf "| %-52s | %7.2fx | %-10s |\n", label, x / y, target
}
function metric(label, name, unit, fmt, target,   x) {
	if (n[name] == 0) return
	x = median(name, unit)
	printf "| %-52s | " fmt " | %-10s |\n", label, x, target
}
END {
	print "| figure | measured | target |"
	print "|---|---|---|"
	ratio("hot open+read+close, embedded mount / tmpfs", "OpenReadClose/oauthfs/guid", "OpenReadClose/tmpfs", "<= 1.5x")
	ratio("hot open+read+close, session mount / tmpfs", "OpenReadClose/client/guid", "OpenReadClose/tmpfs", "<= 1.5x")
	ratio("hot open+read+close, system mount / tmpfs", "OpenReadClose/system/guid", "OpenReadClose/tmpfs", "<= 2x")
	ratio("hot open+read+close, system mount by-name / tmpfs", "OpenReadClose/system/by-name", "OpenReadClose/tmpfs", "")
	ratio("cat access_token / cat of a tmpfs file", "Cat/oauthfs", "Cat/tmpfs", "<= 1.1x")
	ratio("ls -l, 1,000 integrations / the same tree on tmpfs", "LsL/n=1000/oauthfs", "LsL/n=1000/tmpfs", "<= 2x")
	ratio("ls -l, 10,000 integrations / the same tree on tmpfs", "LsL/n=10000/oauthfs", "LsL/n=10000/tmpfs", "<= 2x")
	ratio("read integrations.json, 5,000 integrations / tmpfs", "Index/oauthfs", "Index/tmpfs", "")
	if (n["ReadersAcrossRefresh"] > 0) {
		h = median("ReadersAcrossRefresh", "p99-hot-µs"); r = median("ReadersAcrossRefresh", "p99-refresh-µs")
		if (h > 0) printf "| %-52s | %7.2fx | %-10s |\n", "p99 read, 64 readers across a refresh / hot", r / h, "<= 2x"
	}
	metric("refreshes caused by 1,000 readers at refresh_at", "Storm", "refreshes/storm", "%8d", "exactly 1")
	metric("provider connections for 1,500 refreshes at once", "ProviderConns", "conns/storm", "%8d", "<= 64")
	metric("system mount, 100 users x 3: token requests per refresh", "SystemUsers", "requests/user-integration", "%8.2f", "exactly 1")
	metric("system mount, 100 users x 3: heap per view (KiB)", "SystemUsers", "heap-KiB/view", "%8.0f", "")
	ratio("reference: go-fuse direct-I/O floor / tmpfs", "OpenReadClose/floor", "OpenReadClose/tmpfs", "")
	ratio("reference: by-name path / guid path", "OpenReadClose/oauthfs/by-name", "OpenReadClose/oauthfs/guid", "")
	ratio("reference: system mount / embedded mount (one READLINK)", "OpenReadClose/system/guid", "OpenReadClose/oauthfs/guid", "")
	split("put refresh", kinds, " ")
	for (i = 1; i <= 2; i++) {
		k = kinds[i]; base = median("Save/" k "/creds=10", "ns/op")
		if (base > 0) {
			printf "| %-52s | %7.2fx | %-10s |\n", "save (" k "), 1,000 / 10 credentials", median("Save/" k "/creds=1000", "ns/op") / base, "about 1"
			printf "| %-52s | %7.2fx | %-10s |\n", "save (" k "), 5,000 / 10 credentials", median("Save/" k "/creds=5000", "ns/op") / base, "about 1"
		}
	}
	ratio("refresh through the PostgreSQL store / the file store", "Store/postgres/refresh", "Store/file/refresh", "")
	ratio("cache-miss read, PostgreSQL store / the file store", "Store/postgres/miss", "Store/file/miss", "")
	print ""
	for (name in n) {
		line = sprintf("%-36s median %12.0f ns/op over %d runs", name, median(name, "ns/op"), n[name])
		for (key in units) { split(key, kk, SUBSEP); if (kk[1] == name) line = line sprintf("  %s %s", median(name, kk[2]), kk[2]) }
		print line | "sort"
	}
	close("sort")
}
