# live_mount returns the live 'oauthfs dev' mount of OAUTHFS_MOUNT (with
# Demo signed in and Other not), or skips the test when there is none.
live_mount <- function() {
  mount <- Sys.getenv("OAUTHFS_MOUNT")
  if (!nzchar(mount)) {
    skip("OAUTHFS_MOUNT is not set: no live 'oauthfs dev' mount (r/run-tests.sh starts one)")
  }
  mount
}

# fake_mount makes a directory laid out like a mount, with plain files:
# integrations.json, and for each integration its meta.json and, when
# given, its access_token and expiry.
fake_mount <- function(integrations, tokens = list(), expiries = list()) {
  mount <- tempfile("fake-oauth-")
  dir.create(mount)
  index <- lapply(integrations, function(i) {
    i <- utils::modifyList(list(
      display_name = i$name, client_id = "c", auth_url = "https://a.example/authorize",
      token_url = "https://a.example/token", scopes = list("read"),
      authenticated = identical(i$status, "signed_in"), expiry = NULL,
      granted_scopes = list(), error = NULL, account = NULL
    ), i)
    dir.create(file.path(mount, i$guid))
    writeLines(jsonlite::toJSON(i, auto_unbox = TRUE, null = "null"), file.path(mount, i$guid, "meta.json"))
    i
  })
  writeLines(jsonlite::toJSON(index, auto_unbox = TRUE, null = "null"), file.path(mount, "integrations.json"))
  for (g in names(tokens)) {
    writeBin(charToRaw(tokens[[g]]), file.path(mount, g, "access_token"))
    expiry <- if (is.null(expiries[[g]]) || !nzchar(expiries[[g]])) NULL else expiries[[g]]
    doc <- list(access_token = tokens[[g]], token_type = "Bearer", expiry = expiry, scopes = list("read"))
    writeLines(jsonlite::toJSON(doc, auto_unbox = TRUE, null = "null"), file.path(mount, g, "token.json"))
  }
  for (g in names(expiries)) writeBin(charToRaw(expiries[[g]]), file.path(mount, g, "expiry"))
  mount
}

# with_env runs code with the environment variables of ... set ("" unsets).
with_env <- function(..., code) {
  vars <- list(...)
  old <- Sys.getenv(names(vars), unset = NA, names = TRUE)
  on.exit({
    for (n in names(old)) if (is.na(old[[n]])) Sys.unsetenv(n) else do.call(Sys.setenv, as.list(old[n]))
  })
  for (n in names(vars)) if (identical(vars[[n]], "")) Sys.unsetenv(n) else do.call(Sys.setenv, vars[n])
  force(code)
}

guid1 <- "0f8fad5b-d9cb-469f-a165-70867728950e"
guid2 <- "7c9e6679-7425-40de-944b-e07fc1f90ae7"
