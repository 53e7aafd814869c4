# Tests that need no live mount: the mount path, errors for a missing
# mount, and the meaning of each errno, on plain directories.

test_that("the mount path comes from the argument, the option, OAUTHFS_MOUNT or /oauth", {
  old <- options(oauthfs.mount = NULL)
  on.exit(options(old))
  with_env(OAUTHFS_MOUNT = "", code = expect_equal(oauthfs_mount(), "/oauth"))
  with_env(OAUTHFS_MOUNT = "/env/oauth", code = {
    expect_equal(oauthfs_mount(), "/env/oauth")
    options(oauthfs.mount = "/option/oauth")
    expect_equal(oauthfs_mount(), "/option/oauth")
    expect_equal(oauthfs_mount("/arg/oauth"), "/arg/oauth")
  })
  expect_error(oauthfs_mount(c("a", "b")), "single string")
})

test_that("a missing mount is an oauthfs_no_mount error naming its path", {
  missing <- file.path(tempfile("no-mount-"), "oauth")
  calls <- list(
    function(m) getOAuthIntegrations(mount = m),
    function(m) getOAuthIntegration(guid1, mount = m),
    function(m) findOAuthIntegration(name = "Demo", mount = m),
    function(m) getOAuthCredentials(guid1, mount = m),
    function(m) getOAuthCredentials("not-a-guid", mount = m)
  )
  for (f in calls) {
    e <- expect_error(f(missing), class = "oauthfs_no_mount")
    expect_s3_class(e, "oauthfs_error")
    expect_match(conditionMessage(e), missing, fixed = TRUE)
    expect_match(conditionMessage(e), "No such file or directory", fixed = TRUE)
    expect_equal(e$mount, missing)
  }
  # From the option and from OAUTHFS_MOUNT too.
  old <- options(oauthfs.mount = missing)
  e <- expect_error(getOAuthIntegrations(), class = "oauthfs_no_mount")
  expect_match(conditionMessage(e), missing, fixed = TRUE)
  options(old)
  with_env(OAUTHFS_MOUNT = missing, code = {
    e <- expect_error(getOAuthCredentials(guid1), class = "oauthfs_no_mount")
    expect_match(conditionMessage(e), missing, fixed = TRUE)
  })
})

test_that("credentials and integrations from files laid out like a mount", {
  m <- fake_mount(
    list(list(guid = guid1, name = "A", status = "signed_in"), list(guid = guid2, name = "B", status = "signed_in")),
    tokens = setNames(list("tok-a", "tok-b"), c(guid1, guid2)),
    expiries = setNames(list("2031-02-03T04:05:06Z", ""), c(guid1, guid2))
  )
  creds <- getOAuthCredentials(toupper(guid1), mount = m)
  expect_equal(creds$access_token, "tok-a")
  expect_equal(creds$token_type, "Bearer")
  expect_equal(creds$expiry, as.POSIXct("2031-02-03 04:05:06", tz = "UTC"))
  expect_equal(creds$audience, guid1)
  expect_true(is.na(getOAuthCredentials(guid2, mount = m)$expiry)) # no expiry
  expect_s3_class(getOAuthCredentials(guid2, mount = m)$expiry, "POSIXct")
  expect_equal(getOAuthIntegrations(mount = m)[[1]]$scopes, "read")
  expect_equal(getOAuthIntegrations(mount = m)[[1]]$granted_scopes, character(0))
})

test_that("each errno, or else the status, gives its error class and names the path", {
  m <- fake_mount(list(
    list(guid = guid1, name = "A", status = "error", authenticated = TRUE, error = "token endpoint: 503"),
    list(guid = guid2, name = "B", status = "expired", error = "invalid_grant: sign in again")
  ))
  read <- function(guid, reason) list(path = file.path(m, guid, "token.json"), reason = reason)
  check <- function(guid, reason, class, pattern) {
    e <- expect_error(oauthfs:::token_error(m, guid, read(guid, reason)), class = class)
    expect_s3_class(e, "oauthfs_error")
    expect_match(conditionMessage(e), file.path(m, guid, "token.json"), fixed = TRUE)
    expect_match(conditionMessage(e), pattern)
    expect_equal(e$reason, reason)
    e
  }
  check(guid1, "Input/output error", "oauthfs_io_error", "unreachable.*Input/output error.*503")
  e <- check(guid2, "Key has expired", "oauthfs_expired", "sign in again with: oauthfs login 'B'")
  expect_s3_class(e, "oauthfs_not_signed_in")
  expect_equal(e$name, "B")
  check(guid1, "Required key not available", "oauthfs_not_signed_in", "oauthfs login 'A'")
  check(guid1, "No such file or directory", "oauthfs_not_found", "no integration with guid")
  check(guid1, "Permission denied", "oauthfs_error", "cannot read the token of 'A'.*Permission denied")
  # A message in another language: the status after the failure decides.
  check(guid1, "Eingabe-/Ausgabefehler", "oauthfs_io_error", "Eingabe-/Ausgabefehler")
  check(guid2, "Schl\u00fcssel ist abgelaufen", "oauthfs_expired", "oauthfs login 'B'")
  check("11111111-2222-4333-8444-555555555555", "Datei nicht gefunden", "oauthfs_not_found", "Datei")
})

test_that("arguments are checked", {
  expect_error(getOAuthCredentials(NA_character_, mount = tempdir()), "audience must be")
  expect_error(getOAuthIntegration(1, mount = tempdir()), "guid must be")
  expect_error(findOAuthIntegration(authenticated = NA, mount = tempdir()), "authenticated must be")
})
