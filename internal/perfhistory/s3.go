package perfhistory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config says how to reach an S3-compatible service.
type S3Config struct {
	// Endpoint is host[:port] or a URL; empty means AWS S3. An http:// URL
	// implies Insecure.
	Endpoint string
	Region   string
	Bucket   string // default bucket when the store URL names none
	// Insecure uses plain HTTP (a local MinIO or a test server).
	Insecure bool
	// AccessKey and SecretKey; empty means the AWS_* environment variables.
	AccessKey, SecretKey string
	// CreateBucket makes the bucket when it does not exist (off by default:
	// a typo in a bucket name should fail, not start an empty history).
	CreateBucket bool
}

// S3ConfigFromEnv reads AWS_REGION, S3_BUCKET, S3_ENDPOINT, S3_INSECURE,
// S3_CREATE_BUCKET and the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY pair.
func S3ConfigFromEnv() S3Config {
	b := func(k string) bool { v, _ := strconv.ParseBool(os.Getenv(k)); return v }
	return S3Config{
		Endpoint:     os.Getenv("S3_ENDPOINT"),
		Region:       os.Getenv("AWS_REGION"),
		Bucket:       os.Getenv("S3_BUCKET"),
		Insecure:     b("S3_INSECURE"),
		AccessKey:    os.Getenv("AWS_ACCESS_KEY_ID"),
		SecretKey:    os.Getenv("AWS_SECRET_ACCESS_KEY"),
		CreateBucket: b("S3_CREATE_BUCKET"),
	}
}

// S3Store keeps records as objects <prefix>/<name> in a bucket.
type S3Store struct {
	client *minio.Client
	bucket string
	prefix string // "" or ends with "/"
}

var _ Store = (*S3Store)(nil)

// NewS3Store connects and checks that the bucket exists (creating it if
// cfg.CreateBucket).
func NewS3Store(ctx context.Context, cfg S3Config, bucket, prefix string) (*S3Store, error) {
	endpoint, secure := "s3.amazonaws.com", !cfg.Insecure
	custom := cfg.Endpoint != ""
	if custom {
		endpoint = cfg.Endpoint
		if strings.Contains(endpoint, "://") {
			u, err := url.Parse(endpoint)
			if err != nil {
				return nil, fmt.Errorf("S3_ENDPOINT %q: %w", cfg.Endpoint, err)
			}
			endpoint = u.Host
			secure = u.Scheme == "https" && !cfg.Insecure
		}
	}
	var creds *credentials.Credentials
	if cfg.AccessKey != "" || cfg.SecretKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	} else {
		creds = credentials.NewEnvAWS()
	}
	opts := &minio.Options{Creds: creds, Secure: secure, Region: cfg.Region, MaxRetries: 3}
	if custom {
		// Self-hosted S3 servers rarely have wildcard DNS for
		// virtual-hosted buckets.
		opts.BucketLookup = minio.BucketLookupPath
	}
	client, err := minio.New(endpoint, opts)
	if err != nil {
		return nil, fmt.Errorf("s3 client: %w", err)
	}
	ok, err := client.BucketExists(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("s3 bucket %q: %w", bucket, err)
	}
	if !ok {
		if !cfg.CreateBucket {
			return nil, fmt.Errorf("s3 bucket %q does not exist (set S3_CREATE_BUCKET=true to create it)", bucket)
		}
		if err := client.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: cfg.Region}); err != nil {
			return nil, fmt.Errorf("s3 create bucket %q: %w", bucket, err)
		}
	}
	prefix = strings.Trim(prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	return &S3Store{client: client, bucket: bucket, prefix: prefix}, nil
}

// Put uploads the record (a single PUT: records are small).
func (s *S3Store) Put(ctx context.Context, rec Record) error {
	_, err := s.client.PutObject(ctx, s.bucket, s.prefix+rec.Name, bytes.NewReader(rec.Data), int64(len(rec.Data)),
		minio.PutObjectOptions{ContentType: "text/plain; charset=utf-8"})
	if err != nil {
		return fmt.Errorf("s3 put %s: %w", rec.Name, err)
	}
	return nil
}

// List returns the records under the prefix, oldest first.
func (s *S3Store) List(ctx context.Context) ([]RecordMeta, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var out []RecordMeta
	var firstErr error
	for obj := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix, Recursive: false}) {
		if obj.Err != nil {
			if firstErr == nil {
				firstErr = obj.Err
				cancel() // the channel must still be drained
			}
			continue
		}
		name := strings.TrimPrefix(obj.Key, s.prefix)
		if strings.Contains(name, "/") {
			continue
		}
		if m, err := ParseRecordName(path.Base(name)); err == nil {
			out = append(out, m)
		}
	}
	if firstErr != nil {
		return nil, fmt.Errorf("s3 list: %w", firstErr)
	}
	sortMetas(out)
	return out, nil
}

// Get downloads one record; an object larger than maxRecordBytes is
// ErrBadRecord rather than read in part.
func (s *S3Store) Get(ctx context.Context, meta RecordMeta) (Record, error) {
	if meta.Name == "" || strings.Contains(meta.Name, "/") {
		return Record{}, fmt.Errorf("bad record name %q", meta.Name)
	}
	obj, err := s.client.GetObject(ctx, s.bucket, s.prefix+meta.Name, minio.GetObjectOptions{})
	if err != nil {
		return Record{}, fmt.Errorf("s3 get %s: %w", meta.Name, err)
	}
	defer obj.Close()
	b, err := readRecord(obj, "s3 get "+meta.Name)
	if errors.Is(err, ErrBadRecord) {
		return Record{}, err
	}
	if err != nil {
		var er minio.ErrorResponse
		if errors.As(err, &er) && er.Code == "NoSuchKey" {
			return Record{}, fmt.Errorf("s3 get %s: %w", meta.Name, os.ErrNotExist)
		}
		return Record{}, fmt.Errorf("s3 get %s: %w", meta.Name, err)
	}
	return Record{RecordMeta: meta, Data: b}, nil
}
