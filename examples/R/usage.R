# Reading OAuth tokens from R: plain files, and rstudioapi-style helpers.
source(file.path(Sys.getenv("OAUTHFS_EXAMPLES", "."), "oauthfs.R"))
mount <- oauthfs_mount()

# A token is a file: readLines (no trailing newline, hence warn = FALSE)...
f <- file.path(mount, "by-name", "Demo", "access_token")
token <- readLines(f, warn = FALSE)
cat("readLines:", nchar(token), "chars\n")
# ...or readChar with the size stat reports.
cat("readChar:", identical(readChar(f, file.size(f)), token), "\n")

# rstudioapi style: find the integration, then its credentials.
demo <- findOAuthIntegration(name = "^Demo$")[[1]]
cat("findOAuthIntegration:", demo$name, demo$authenticated, "\n")
others <- findOAuthIntegration(authenticated = FALSE)
cat("not authenticated:", vapply(others, function(i) i$name, ""), "\n")
cat("getOAuthIntegration:", getOAuthIntegration(demo$guid)$name, "\n")
cat("getOAuthIntegrations:", length(getOAuthIntegrations()), "\n")
creds <- getOAuthCredentials(demo$guid)
cat("getOAuthCredentials:", creds$token_type, identical(creds$access_token, token), "\n")

other <- findOAuthIntegration(name = "^Other$")[[1]]
msg <- tryCatch(getOAuthCredentials(other$guid), oauthfs_not_signed_in = function(e) conditionMessage(e))
cat("not signed in:", msg, "\n")
